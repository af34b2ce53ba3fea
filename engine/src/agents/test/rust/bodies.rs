//! The functions of a Rust file as per-test coverage sees them: every outermost function with
//! the lines of its body, keyed by where it sits (`module::Type::name`, `<Type as
//! Trait>::name`), so two versions of a file can be compared function by function and the
//! lines a test executed can be named by the functions holding them.
//!
//! Outermost only: a function or closure nested in a body is part of that body (a change to it
//! is a change to the outer function, and running it runs the outer one). Functions inside
//! macro definitions or macro calls are not seen, so a change there is outside every body.

use std::collections::BTreeMap;

use syn::spanned::Spanned;
use syn::visit::Visit;

/// One function of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Where it sits: inline modules, the impl's type (and trait), the name; `#2`, `#3` for
    /// the second and third function with the same key (items under different `cfg`s).
    pub key: String,
    /// First line of the item with its attributes, first line of its signature, and the lines
    /// of the body's braces.
    pub start: usize,
    pub first: usize,
    pub open: usize,
    pub close: usize,
    /// A `const fn`: evaluated at compile time where used in a const context, which coverage
    /// does not see.
    pub constant: bool,
    /// A `#[test]` (or similar) function: only the harness calls it.
    pub test: bool,
}

impl Function {
    /// Whether the line lies strictly between the body's braces.
    pub fn inside_body(&self, line: usize) -> bool {
        self.open < line && line < self.close
    }

    /// Whether the line is part of the function (signature or body).
    pub fn holds(&self, line: usize) -> bool {
        self.first <= line && line <= self.close
    }
}

/// Every outermost function of `text`, in file order.
pub fn functions(text: &str) -> Result<Vec<Function>, String> {
    let file = syn::parse_file(text).map_err(|e| format!("unparsable: {e}"))?;
    let mut finder = Finder::default();
    finder.visit_file(&file);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for function in &mut finder.found {
        let count = seen.entry(function.key.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            function.key = format!("{}#{count}", function.key);
        }
    }
    Ok(finder.found)
}

#[derive(Default)]
struct Finder {
    found: Vec<Function>,
    path: Vec<String>,
}

fn is_test(attributes: &[syn::Attribute]) -> bool {
    attributes.iter().any(|a| {
        let last = a
            .path()
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        last == "test" || last == "bench" || last.ends_with("_test") || last == "rstest"
    })
}

impl Finder {
    fn push(
        &mut self,
        name: &syn::Ident,
        attributes: &[syn::Attribute],
        signature: &syn::Signature,
        body: &syn::Block,
    ) {
        let mut key = self.path.clone();
        key.push(name.to_string());
        let first = signature.span().start().line;
        let start = attributes
            .iter()
            .map(|a| a.span().start().line)
            .chain([first])
            .min()
            .unwrap_or(first);
        self.found.push(Function {
            key: key.join("::"),
            start,
            first,
            open: body.brace_token.span.open().start().line,
            close: body.brace_token.span.close().end().line,
            constant: signature.constness.is_some(),
            test: is_test(attributes),
        });
    }
}

impl<'ast> Visit<'ast> for Finder {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.path.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.path.pop();
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        let self_type = tokens(&item.self_ty);
        let owner = match &item.trait_ {
            Some((_, path, _)) => format!("<{self_type} as {}>", tokens(path)),
            None => self_type,
        };
        self.path.push(owner);
        syn::visit::visit_item_impl(self, item);
        self.path.pop();
    }

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        self.path.push(format!("trait {}", item.ident));
        syn::visit::visit_item_trait(self, item);
        self.path.pop();
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        // Not descending: what is nested belongs to this body.
        self.push(&item.sig.ident, &item.attrs, &item.sig, &item.block);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.push(&item.sig.ident, &item.attrs, &item.sig, &item.block);
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(body) = &item.default {
            self.push(&item.sig.ident, &item.attrs, &item.sig, body);
        }
    }
}

/// Tokens as text with single spaces (the same for the same code, whatever its layout).
fn tokens(node: &impl quote::ToTokens) -> String {
    node.to_token_stream().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn functions_are_keyed_by_where_they_sit() {
        let text = "fn free() -> u8 {\n    fn inner() {}\n    1\n}\n\
                    struct S;\n\
                    impl S {\n    const fn k() -> u8 { 3 }\n    fn m(&self) {\n        let _ = || 1;\n    }\n}\n\
                    impl std::fmt::Display for S {\n    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {\n        write!(f, \"s\")\n    }\n}\n\
                    trait T {\n    fn d(&self) -> u8 {\n        0\n    }\n}\n\
                    #[cfg(unix)]\nfn os() {}\n#[cfg(not(unix))]\nfn os() {}\n\
                    mod tests {\n    #[test]\n    fn t() {\n        assert_eq!(super::free(), 1);\n    }\n}\n";
        let found = functions(text).unwrap();
        let keys: Vec<&str> = found.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "free",
                "S::k",
                "S::m",
                "<S as std :: fmt :: Display>::fmt",
                "trait T::d",
                "os",
                "os#2",
                "tests::t"
            ]
        );
        let free = &found[0];
        assert_eq!((free.first, free.open, free.close), (1, 1, 4));
        assert!(free.inside_body(2) && !free.inside_body(1) && !free.inside_body(4));
        assert!(found[1].constant && !found[2].constant);
        assert!(found[7].test && !found[0].test);
        assert_eq!((found[7].start, found[7].first), (27, 28));
        assert!(functions("fn (").is_err());
    }
}
