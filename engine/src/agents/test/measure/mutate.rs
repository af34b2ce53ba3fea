//! Mutants for the measure: a guard at the top of each function a commit changed, which
//! panics when `CAIRN_MEASURE_MUTANT` is set in the environment.
//!
//! The fault is switched by the environment rather than by editing the source again
//! (a "mutant schema"), so one build serves both the mutated run and the clean re-run that
//! confirms a failing test passes without the fault. A `const fn` cannot read the environment
//! at run time, so its guard reads it at compile time (`option_env!` of `CAIRN_MEASURE_CONST`):
//! those faults need a build of their own. Changed lines in an `impl` block outside its
//! functions (an associated const, the header) fault every function of the block; a changed
//! `macro_rules!` faults the functions that call the macro. Test code (`#[test]` functions,
//! `#[cfg(test)]` modules) is never mutated.

use syn::spanned::Spanned;
use syn::visit::Visit;

/// The environment variable that switches every inserted fault on.
pub const SWITCH: &str = "CAIRN_MEASURE_MUTANT";
/// Set at compile time, it switches the faults of `const fn`s on.
pub const CONST_SWITCH: &str = "CAIRN_MEASURE_CONST";

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
    /// A `const fn`: its fault is switched at compile time.
    pub constant: bool,
}

/// What a commit changed in one file, as mutants see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    pub functions: Vec<Candidate>,
    /// `macro_rules!` macros whose definition changed: their callers get the faults.
    pub macros: Vec<String>,
}

/// Functions of `text` that overlap the changed `lines`, most changed first.
pub fn candidates(text: &str, lines: &[(usize, usize)]) -> Result<Vec<Candidate>, String> {
    Ok(changed(text, lines)?.functions)
}

/// The functions and macros of `text` that the changed `lines` touch.
pub fn changed(text: &str, lines: &[(usize, usize)]) -> Result<Changed, String> {
    let file = syn::parse_file(text).map_err(|e| format!("unparsable: {e}"))?;
    let mut finder = Finder::new(text, lines);
    finder.visit_file(&file);
    let mut found = finder.found;
    found.sort_by_key(|c| (std::cmp::Reverse(c.changed), c.line));
    Ok(Changed {
        functions: found,
        macros: finder.macros,
    })
}

/// The non-test functions of `text` that call one of `macros` (`name!(…)`).
pub fn callers(text: &str, macros: &[String]) -> Result<Vec<Candidate>, String> {
    let file = syn::parse_file(text).map_err(|e| format!("unparsable: {e}"))?;
    let mut finder = Finder::new(text, &[]);
    finder.callers_of = macros.to_vec();
    finder.visit_file(&file);
    Ok(finder.found)
}

/// `text` with a fault guard inserted in each of `chosen`.
pub fn apply(text: &str, chosen: &[Candidate]) -> String {
    let mut offsets: Vec<&Candidate> = chosen.iter().collect();
    // From the end, so earlier offsets stay valid.
    offsets.sort_by_key(|c| std::cmp::Reverse(c.insert_at));
    let mut out = text.to_string();
    for candidate in offsets {
        let name = candidate.name.replace(['"', '\\', '{', '}'], "");
        let guard = if candidate.constant {
            format!(
                " if ::core::option_env!({CONST_SWITCH:?}).is_some() {{ ::core::panic!(\"cairn measure: mutant in {name}\") }} "
            )
        } else {
            format!(
                " if ::std::env::var_os({SWITCH:?}).is_some() {{ ::std::panic!(\"cairn measure: mutant in {name}\") }} "
            )
        };
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
    /// Changed lines of the `impl` block being visited that are outside its functions.
    impl_changed: usize,
    macros: Vec<String>,
    /// When set, functions calling these macros are the candidates (nothing else).
    callers_of: Vec<String>,
}

fn is_test_code(attributes: &[syn::Attribute]) -> bool {
    attributes.iter().any(|a| {
        let last = a.path().segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        let cfg_test = a.path().is_ident("cfg") && matches!(&a.meta, syn::Meta::List(list) if list.tokens.to_string().split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == "test"));
        cfg_test || last == "test" || last == "bench" || last.ends_with("_test") || last == "rstest"
    })
}

/// How many of the changed line ranges `lines` (1-based, inclusive) fall within `first..=last`.
pub(super) fn changed_within(lines: &[(usize, usize)], first: usize, last: usize) -> usize {
    lines
        .iter()
        .map(|&(start, end)| {
            let (start, end) = (start.max(first), end.min(last));
            if start <= end { end - start + 1 } else { 0 }
        })
        .sum()
}

impl<'a> Finder<'a> {
    fn new(text: &'a str, lines: &'a [(usize, usize)]) -> Finder<'a> {
        Finder {
            text,
            lines,
            found: Vec::new(),
            in_test: false,
            impl_type: None,
            impl_changed: 0,
            macros: Vec::new(),
            callers_of: Vec::new(),
        }
    }

    /// Changed lines within `first..=last`.
    fn overlap(&self, first: usize, last: usize) -> usize {
        changed_within(self.lines, first, last)
    }

    /// Visits a function body, noting whether it calls one of `callers_of`.
    fn body_calls(&mut self, body: &syn::Block) -> bool {
        if self.callers_of.is_empty() {
            return false;
        }
        let mut probe = CallProbe {
            macros: &self.callers_of,
            found: false,
        };
        probe.visit_block(body);
        probe.found
    }

    fn consider(
        &mut self,
        name: String,
        attributes: &[syn::Attribute],
        signature: &syn::Signature,
        body: &syn::Block,
    ) {
        if self.in_test || is_test_code(attributes) {
            return;
        }
        let first = signature.fn_token.span.start().line;
        let last = body.brace_token.span.close().end().line;
        let changed = if self.callers_of.is_empty() {
            // Lines of the enclosing impl block outside any function count for each.
            self.overlap(first, last) + self.impl_changed
        } else {
            usize::from(self.body_calls(body))
        };
        if changed == 0 {
            return;
        }
        let open = body.brace_token.span.open().end();
        let Some(insert_at) = offset(self.text, open.line, open.column) else {
            return;
        };
        if self.found.iter().any(|c| c.insert_at == insert_at) {
            return;
        }
        self.found.push(Candidate {
            name,
            line: first,
            insert_at,
            changed,
            constant: signature.constness.is_some(),
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
        // Changed lines of the block outside its functions (header, consts, types).
        let block = self.overlap(
            item.impl_token.span.start().line,
            item.brace_token.span.close().end().line,
        );
        let in_functions: usize = item
            .items
            .iter()
            .filter_map(|i| match i {
                syn::ImplItem::Fn(f) => Some(self.overlap(
                    f.sig.fn_token.span.start().line,
                    f.block.brace_token.span.close().end().line,
                )),
                _ => None,
            })
            .sum();
        let was_changed =
            std::mem::replace(&mut self.impl_changed, block.saturating_sub(in_functions));
        syn::visit::visit_item_impl(self, item);
        self.impl_type = was;
        self.impl_changed = was_changed;
    }

    fn visit_item_macro(&mut self, item: &'ast syn::ItemMacro) {
        if let Some(ident) = &item.ident
            && item.mac.path.is_ident("macro_rules")
            && !self.in_test
        {
            let (first, last) = (
                item.mac.path.span().start().line,
                item.mac.delimiter.span().close().end().line,
            );
            if self.overlap(first, last) > 0 {
                self.macros.push(ident.to_string());
            }
        }
        syn::visit::visit_item_macro(self, item);
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

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        // Functions of a trait are not in an impl block.
        let was = std::mem::replace(&mut self.impl_changed, 0);
        syn::visit::visit_item_trait(self, item);
        self.impl_changed = was;
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

/// Finds calls of the named macros in a function body.
struct CallProbe<'a> {
    macros: &'a [String],
    found: bool,
}

impl<'ast> Visit<'ast> for CallProbe<'_> {
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if let Some(last) = mac.path.segments.last()
            && self.macros.iter().any(|m| last.ident == m)
        {
            self.found = true;
        }
        // Macro arguments are tokens: a nested `m!(…)` inside them is found by name.
        let text = mac.tokens.to_string();
        if self
            .macros
            .iter()
            .any(|m| text.contains(&format!("{m} !")) || text.contains(&format!("{m}!")))
        {
            self.found = true;
        }
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
            ["double", "S::name", "fixed"],
            "tests are left alone"
        );
        assert!(all[2].constant);
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
        assert!(
            mutated.contains(
                "const fn fixed() -> i32 { if ::core::option_env!(\"CAIRN_MEASURE_CONST\")"
            ),
            "{mutated}"
        );
        syn::parse_file(&mutated).expect("the mutant still parses");
    }

    #[test]
    fn impl_blocks_and_macros_fault_the_functions_they_change() {
        let source = "macro_rules! twice {\n    ($x:expr) => { $x * 2 };\n}\n\nstruct S;\nimpl S {\n    const K: i32 = 3;\n    fn k(&self) -> i32 { Self::K }\n    fn other(&self) -> i32 { 1 }\n}\nimpl std::fmt::Display for S {\n    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { write!(f, \"s\") }\n}\nfn uses() -> i32 { twice!(2) }\nfn plain() -> i32 { 2 }\n";
        // The associated const changed: every function of its impl block.
        let names = |found: Vec<Candidate>| found.into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            names(candidates(source, &[(7, 7)]).expect("parses")),
            ["S::k", "S::other"]
        );
        // A trait impl's method is a function like any other.
        assert_eq!(
            names(candidates(source, &[(12, 12)]).expect("parses")),
            ["S::fmt"]
        );
        // The macro changed: no function of its own, its callers get the faults.
        let found = changed(source, &[(2, 2)]).expect("parses");
        assert!(found.functions.is_empty());
        assert_eq!(found.macros, ["twice"]);
        assert_eq!(
            names(callers(source, &found.macros).expect("parses")),
            ["uses"]
        );
    }
}
