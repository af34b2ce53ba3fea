//! Mutants for the measure: a guard at the top of each function a commit changed, which
//! panics when `CAIRN_MEASURE_MUTANT` is set in the environment.
//!
//! The fault is switched by the environment rather than by editing the source again
//! (a "mutant schema"), so one build serves both the mutated run and the clean re-run that
//! confirms a failing test passes without the fault. Test code (`#[test]` functions,
//! `#[cfg(test)]` modules) and `const fn`s are never mutated.

use syn::visit::Visit;

/// The environment variable that switches every inserted fault on.
pub const SWITCH: &str = "CAIRN_MEASURE_MUTANT";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `module_fn_name` as written (`Type::method` inside an impl).
    pub name: String,
    /// First line of the function.
    pub line: usize,
    /// Byte offset just after the body's opening brace.
    pub insert_at: usize,
    /// Changed lines inside the function.
    pub changed: usize,
}

/// Functions of `text` that overlap the changed `lines`, most changed first.
pub fn candidates(text: &str, lines: &[(usize, usize)]) -> Result<Vec<Candidate>, String> {
    let file = syn::parse_file(text).map_err(|e| format!("unparsable: {e}"))?;
    let mut finder = Finder {
        text,
        lines,
        found: Vec::new(),
        in_test: false,
        impl_type: None,
    };
    finder.visit_file(&file);
    let mut found = finder.found;
    found.sort_by_key(|c| (std::cmp::Reverse(c.changed), c.line));
    Ok(found)
}

/// `text` with a fault guard inserted in each of `chosen`.
pub fn apply(text: &str, chosen: &[Candidate]) -> String {
    let mut offsets: Vec<&Candidate> = chosen.iter().collect();
    // From the end, so earlier offsets stay valid.
    offsets.sort_by_key(|c| std::cmp::Reverse(c.insert_at));
    let mut out = text.to_string();
    for candidate in offsets {
        let guard = format!(
            " if ::std::env::var_os({SWITCH:?}).is_some() {{ ::std::panic!(\"cairn measure: mutant in {}\") }} ",
            candidate.name.replace('"', "")
        );
        if out.is_char_boundary(candidate.insert_at) {
            out.insert_str(candidate.insert_at, &guard);
        }
    }
    out
}

struct Finder<'a> {
    text: &'a str,
    lines: &'a [(usize, usize)],
    found: Vec<Candidate>,
    in_test: bool,
    impl_type: Option<String>,
}

fn is_test_code(attributes: &[syn::Attribute]) -> bool {
    attributes.iter().any(|a| {
        let last = a.path().segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        let cfg_test = a.path().is_ident("cfg") && matches!(&a.meta, syn::Meta::List(list) if list.tokens.to_string().split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == "test"));
        cfg_test || last == "test" || last == "bench" || last.ends_with("_test") || last == "rstest"
    })
}

impl Finder<'_> {
    fn consider(
        &mut self,
        name: String,
        attributes: &[syn::Attribute],
        signature: &syn::Signature,
        body: &syn::Block,
    ) {
        if self.in_test || is_test_code(attributes) || signature.constness.is_some() {
            return;
        }
        let first = signature.fn_token.span.start().line;
        let last = body.brace_token.span.close().end().line;
        let changed: usize = self
            .lines
            .iter()
            .map(|&(start, end)| {
                let (start, end) = (start.max(first), end.min(last));
                if start <= end { end - start + 1 } else { 0 }
            })
            .sum();
        if changed == 0 {
            return;
        }
        let open = body.brace_token.span.open().end();
        let Some(insert_at) = offset(self.text, open.line, open.column) else {
            return;
        };
        self.found.push(Candidate {
            name,
            line: first,
            insert_at,
            changed,
        });
    }
}

impl<'ast> Visit<'ast> for Finder<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let was = self.in_test;
        self.in_test |= is_test_code(&item.attrs);
        syn::visit::visit_item_mod(self, item);
        self.in_test = was;
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        if is_test_code(&item.attrs) {
            return;
        }
        let was = self.impl_type.take();
        if let syn::Type::Path(path) = &*item.self_ty {
            self.impl_type = path.path.segments.last().map(|s| s.ident.to_string());
        }
        syn::visit::visit_item_impl(self, item);
        self.impl_type = was;
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.consider(
            item.sig.ident.to_string(),
            &item.attrs,
            &item.sig,
            &item.block,
        );
        // Functions nested in a body are found too, each with its own guard.
        syn::visit::visit_item_fn(self, item);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        let name = match &self.impl_type {
            Some(owner) => format!("{owner}::{}", item.sig.ident),
            None => item.sig.ident.to_string(),
        };
        self.consider(name, &item.attrs, &item.sig, &item.block);
        syn::visit::visit_impl_item_fn(self, item);
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(body) = &item.default {
            self.consider(item.sig.ident.to_string(), &item.attrs, &item.sig, body);
        }
        syn::visit::visit_trait_item_fn(self, item);
    }
}

/// Byte offset of a 1-based line and 0-based character column.
fn offset(text: &str, line: usize, column: usize) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += text[start..].find('\n')? + 1;
    }
    let rest = &text[start..];
    let within = rest
        .char_indices()
        .nth(column)
        .map_or(rest.len(), |(i, _)| i);
    Some(start + within)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "pub fn double(x: i32) -> i32 {\n    x * 2\n}\n\nconst fn fixed() -> i32 { 1 }\n\nstruct S;\nimpl S {\n    fn name(&self) -> &str { \"é\" }\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() { assert_eq!(super::double(2), 4); }\n}\n";

    #[test]
    fn changed_functions_outside_tests_get_a_guard() {
        let all = candidates(SOURCE, &[(1, 20)]).expect("parses");
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["double", "S::name"],
            "const fn and tests are left alone"
        );
        let only_double = candidates(SOURCE, &[(2, 2)]).expect("parses");
        assert_eq!(only_double.len(), 1);
        let mutated = apply(SOURCE, &all);
        assert!(
            mutated.starts_with(
                "pub fn double(x: i32) -> i32 { if ::std::env::var_os(\"CAIRN_MEASURE_MUTANT\")"
            ),
            "{mutated}"
        );
        assert!(
            mutated.contains("fn name(&self) -> &str { if ::std::env::var_os"),
            "{mutated}"
        );
        syn::parse_file(&mutated).expect("the mutant still parses");
    }
}
