//! What one Rust source file says about its modules, read with `syn`: the modules it declares
//! (inline, or `mod x;` with `#[path]`), its `use` imports, every qualified path it names (in
//! code, in macro arguments, in `serde`-style string attributes), `impl` blocks, macros it
//! defines or calls, whether it holds tests or doc tests, and what it includes.
//!
//! Nothing is resolved here (see `graph.rs`); this only collects raw facts. Anything that can
//! make the source say more than it shows (`include!`) is reported as opaque, so selection
//! falls back to the crate graph for that crate.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use syn::visit::Visit;

/// A path as written: its segments, `crate`, `self`, `super` and `$crate` included.
pub type RawPath = Vec<String>;

/// A `mod name;` declaration whose body lives in another file.
#[derive(Debug, Clone)]
pub struct ModDecl {
    pub name: String,
    /// `#[path = "…"]`, as written.
    pub path_attr: Option<String>,
}

/// One `use` leaf: `alias` is the name it binds (`None` for a glob).
#[derive(Debug, Clone)]
pub struct UseLeaf {
    pub alias: Option<String>,
    pub path: RawPath,
    /// `pub use` (any visibility but private): a re-export others may name through it.
    pub public: bool,
}

/// Facts about one module of the file: the file's own module (`path` empty) or an inline one.
#[derive(Debug, Clone, Default)]
pub struct ModuleFacts {
    /// Path below the file's module (`["tests"]` for an inline `mod tests { … }`).
    pub path: Vec<String>,
    /// First and last line of an inline module (1-based); the whole file for the file module.
    pub lines: (usize, usize),
    pub declared: Vec<ModDecl>,
    pub uses: Vec<UseLeaf>,
    /// Qualified paths named anywhere in the module's own items (two segments or more).
    pub references: Vec<RawPath>,
    /// The first name of every path the module's code names (`X` in `X::new()`, `f` in
    /// `f(1)`), also inside macro arguments: whether a `pub use` is also used here.
    pub names: std::collections::BTreeSet<String>,
    /// The module calls methods (`x.f()`), which may come from any trait in scope.
    pub method_calls: bool,
    /// `impl Trait for Type`: the self type's path and the trait's. The self type's path is
    /// empty when it names no type of its own (a generic parameter, a reference, a tuple…).
    pub impls: Vec<(RawPath, Option<RawPath>)>,
    /// Structs, enums and unions declared in the module (not type aliases, which may name
    /// a type made anywhere).
    pub nominal_types: std::collections::BTreeSet<String>,
    pub macro_defs: Vec<String>,
    pub macro_calls: Vec<RawPath>,
    /// Number of `#[test]`-like functions directly in this module.
    pub tests: usize,
    /// An item-level macro call that might expand to tests (`proptest! { … }`).
    pub maybe_tests: bool,
    /// Runnable code blocks in doc comments (rustdoc runs them with `cargo test`).
    pub doc_tests: bool,
    /// `include_str!`/`include_bytes!` literal paths, relative to the file's directory.
    pub includes: Vec<String>,
    /// `CARGO_BIN_EXE_<name>` mentioned: the target runs that binary of its own package.
    pub runs_bins: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct FileFacts {
    /// The file module first, then inline modules in source order.
    pub modules: Vec<ModuleFacts>,
    /// Why this file cannot be fully understood (`include!` of code), if it cannot.
    pub opaque: Vec<String>,
}

/// Parses Rust source text.
pub fn parse_source(text: &str) -> Result<FileFacts, String> {
    let file = syn::parse_file(text).map_err(|e| {
        let start = e.span().start();
        format!("unparsable at {}:{}: {e}", start.line, start.column)
    })?;
    let mut collector = Collector {
        facts: FileFacts::default(),
        stack: vec![0],
        fence_open: false,
    };
    collector.facts.modules.push(ModuleFacts {
        lines: (1, usize::MAX),
        ..Default::default()
    });
    for attribute in &file.attrs {
        collector.attribute(attribute);
    }
    for item in &file.items {
        collector.visit_item(item);
    }
    Ok(collector.facts)
}

pub(super) struct Collector {
    facts: FileFacts,
    /// Indexes into `facts.modules`: the module being visited is the last.
    stack: Vec<usize>,
    /// Inside a fenced block of doc comments (each `///` line is its own attribute).
    fence_open: bool,
}

/// Macros known not to expand to tests or modules (so a call at item level says nothing).
const PLAIN_ITEM_MACROS: &[&str] = &[
    "macro_rules",
    "thread_local",
    "lazy_static",
    "compile_error",
    "debug_assert",
    "assert",
];

impl Collector {
    fn current(&mut self) -> &mut ModuleFacts {
        let index = self.stack.last().copied().unwrap_or(0);
        &mut self.facts.modules[index]
    }

    fn attribute(&mut self, attribute: &syn::Attribute) {
        if attribute.path().is_ident("doc") {
            if let syn::Meta::NameValue(value) = &attribute.meta
                && let syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(text),
                    ..
                }) = &value.value
                && runnable_doc_block(&text.value(), &mut self.fence_open)
            {
                self.current().doc_tests = true;
            }
            return;
        }
        // `#[serde(with = "crate::x")]` and the like name code in strings.
        let tokens = match &attribute.meta {
            syn::Meta::List(list) => list.tokens.clone(),
            syn::Meta::NameValue(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }),
                ..
            }) => {
                if let Some(path) = string_path(&text.value()) {
                    self.current().references.push(path);
                }
                return;
            }
            _ => return,
        };
        self.scan_tokens(tokens);
    }

    /// Whether the attributes mark a test (`#[test]`, `#[tokio::test]`, `#[rstest]`, …).
    pub(super) fn has_test_attribute(attributes: &[syn::Attribute]) -> bool {
        attributes.iter().any(|a| {
            let last = a
                .path()
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default();
            last == "test"
                || last == "bench"
                || last.ends_with("_test")
                || last.starts_with("test_")
                || last == "rstest"
        })
    }

    /// Collects `a::b` paths, `$crate::…` paths and string literals from a token stream.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let mut flat = Vec::new();
        flatten(tokens, &mut flat);
        let mut index = 0;
        while index < flat.len() {
            if let Flat::Literal(text) = &flat[index] {
                let text = text.clone();
                if let Some(name) = text.split("CARGO_BIN_EXE_").nth(1) {
                    let name: String = name
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                        .collect();
                    self.current().runs_bins.push(name);
                }
                if let Some(path) = string_path(&text) {
                    self.current().references.push(path);
                }
                index += 1;
                continue;
            }
            let mut path = Vec::new();
            let mut cursor = index;
            if matches!(flat.get(cursor), Some(Flat::Dollar))
                && matches!(flat.get(cursor + 1), Some(Flat::Ident(i)) if i == "crate")
            {
                path.push("$crate".to_string());
                cursor += 2;
            } else if let Some(Flat::Ident(ident)) = flat.get(cursor) {
                let ident = ident.clone();
                self.current().names.insert(ident.clone());
                path.push(ident);
                cursor += 1;
            } else {
                index += 1;
                continue;
            }
            while matches!(flat.get(cursor), Some(Flat::PathSep)) {
                match flat.get(cursor + 1) {
                    Some(Flat::Ident(ident)) => {
                        path.push(ident.clone());
                        cursor += 2;
                    }
                    _ => break,
                }
            }
            if path.len() >= 2 {
                self.current().references.push(path);
            }
            index = cursor.max(index + 1);
        }
    }

    fn macro_call(&mut self, mac: &syn::Macro) {
        let path = path_segments(&mac.path);
        let name = path.last().cloned().unwrap_or_default();
        match name.as_str() {
            "include_str" | "include_bytes" => {
                if let Ok(literal) = syn::parse2::<syn::LitStr>(mac.tokens.clone()) {
                    self.current().includes.push(literal.value());
                } else {
                    self.facts
                        .opaque
                        .push(format!("{name}! with a computed path"));
                }
            }
            "include" => self
                .facts
                .opaque
                .push("include! of source code".to_string()),
            _ => {}
        }
        self.current().macro_calls.push(path);
        self.scan_tokens(mac.tokens.clone());
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_attribute(&mut self, attribute: &'ast syn::Attribute) {
        self.attribute(attribute);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        for attribute in &item.attrs {
            self.attribute(attribute);
        }
        let name = item.ident.to_string();
        let path_attr = item
            .attrs
            .iter()
            .find(|a| a.path().is_ident("path"))
            .and_then(|a| match &a.meta {
                syn::Meta::NameValue(value) => match &value.value {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }) => Some(text.value()),
                    _ => None,
                },
                _ => None,
            });
        if item.attrs.iter().any(|a| a.path().is_ident("cfg_attr") && matches!(&a.meta, syn::Meta::List(list) if list.tokens.to_string().contains("path"))) {
            self.facts.opaque.push(format!("mod {name} has a #[cfg_attr(…, path = …)]"));
        }
        let Some((brace, items)) = &item.content else {
            self.current().declared.push(ModDecl { name, path_attr });
            return;
        };
        let mut path = self.current().path.clone();
        path.push(name.clone());
        if path_attr.is_some() {
            // A #[path] on an inline module moves where its children's files are looked up.
            self.facts
                .opaque
                .push(format!("inline mod {name} with #[path]"));
        }
        let span = brace.span.join();
        let lines = (item.mod_token.span.start().line, span.end().line);
        self.facts.modules.push(ModuleFacts {
            path,
            lines,
            ..Default::default()
        });
        self.stack.push(self.facts.modules.len() - 1);
        for item in items {
            self.visit_item(item);
        }
        self.stack.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut leaves = Vec::new();
        flatten_use(&item.tree, Vec::new(), &mut leaves);
        let public = !matches!(item.vis, syn::Visibility::Inherited);
        for leaf in &mut leaves {
            leaf.public = public;
        }
        if item.leading_colon.is_some() {
            for leaf in &mut leaves {
                leaf.path.insert(0, "::".to_string());
            }
        }
        self.current().uses.extend(leaves);
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if Self::has_test_attribute(&item.attrs) {
            self.current().tests += 1;
        }
        syn::visit::visit_item_fn(self, item);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if Self::has_test_attribute(&item.attrs) {
            self.current().tests += 1;
        }
        syn::visit::visit_impl_item_fn(self, item);
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        let self_type = match &*item.self_ty {
            syn::Type::Path(path) if path.qself.is_none() => path_segments(&path.path),
            _ => Vec::new(),
        };
        // `impl<T: Show> Print for T`: `T` is any type, not one of the module's.
        let generic = self_type.first().is_some_and(|first| {
            item.generics
                .type_params()
                .any(|p| p.ident == first.as_str())
        });
        let self_type = if generic { Vec::new() } else { self_type };
        let trait_path = item.trait_.as_ref().map(|(_, path, _)| path_segments(path));
        self.current().impls.push((self_type, trait_path));
        syn::visit::visit_item_impl(self, item);
    }

    fn visit_item_struct(&mut self, item: &'ast syn::ItemStruct) {
        self.current().nominal_types.insert(item.ident.to_string());
        syn::visit::visit_item_struct(self, item);
    }

    fn visit_item_enum(&mut self, item: &'ast syn::ItemEnum) {
        self.current().nominal_types.insert(item.ident.to_string());
        syn::visit::visit_item_enum(self, item);
    }

    fn visit_item_union(&mut self, item: &'ast syn::ItemUnion) {
        self.current().nominal_types.insert(item.ident.to_string());
        syn::visit::visit_item_union(self, item);
    }

    fn visit_item_macro(&mut self, item: &'ast syn::ItemMacro) {
        for attribute in &item.attrs {
            self.attribute(attribute);
        }
        let name = path_segments(&item.mac.path)
            .last()
            .cloned()
            .unwrap_or_default();
        if let Some(ident) = &item.ident
            && name == "macro_rules"
        {
            self.current().macro_defs.push(ident.to_string());
            self.scan_tokens(item.mac.tokens.clone());
            return;
        }
        if !PLAIN_ITEM_MACROS.contains(&name.as_str()) {
            self.current().maybe_tests = true;
        }
        self.macro_call(&item.mac);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.macro_call(mac);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.current().method_calls = true;
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments = path_segments(path);
        if let Some(first) = segments.first() {
            self.current().names.insert(first.clone());
        }
        if segments.len() >= 2 {
            self.current().references.push(segments);
        }
        syn::visit::visit_path(self, path);
    }
}

pub fn path_segments(path: &syn::Path) -> RawPath {
    let mut segments: RawPath = path.segments.iter().map(|s| s.ident.to_string()).collect();
    if path.leading_colon.is_some() {
        segments.insert(0, "::".to_string());
    }
    segments
}

fn flatten_use(tree: &syn::UseTree, prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    match tree {
        syn::UseTree::Path(path) => {
            let mut prefix = prefix;
            prefix.push(path.ident.to_string());
            flatten_use(&path.tree, prefix, out);
        }
        syn::UseTree::Name(name) => {
            let ident = name.ident.to_string();
            if ident == "self" {
                out.push(UseLeaf {
                    alias: prefix.last().cloned(),
                    path: prefix,
                    public: false,
                });
            } else {
                let mut path = prefix;
                path.push(ident.clone());
                out.push(UseLeaf {
                    alias: Some(ident),
                    path,
                    public: false,
                });
            }
        }
        syn::UseTree::Rename(rename) => {
            let mut path = prefix;
            let ident = rename.ident.to_string();
            if ident != "self" {
                path.push(ident);
            }
            let alias = rename.rename.to_string();
            out.push(UseLeaf {
                alias: (alias != "_").then_some(alias),
                path,
                public: false,
            });
        }
        syn::UseTree::Glob(_) => out.push(UseLeaf {
            alias: None,
            path: prefix,
            public: false,
        }),
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                flatten_use(tree, prefix.clone(), out);
            }
        }
    }
}

enum Flat {
    Ident(String),
    PathSep,
    Dollar,
    Literal(String),
    Other,
}

fn flatten(tokens: TokenStream, out: &mut Vec<Flat>) {
    let mut previous_colon = false;
    for token in tokens {
        match token {
            TokenTree::Ident(ident) => {
                out.push(Flat::Ident(ident.to_string()));
                previous_colon = false;
            }
            TokenTree::Punct(punct) => {
                let ch = punct.as_char();
                if ch == ':' && previous_colon {
                    out.pop();
                    out.push(Flat::PathSep);
                    previous_colon = false;
                } else if ch == ':' && punct.spacing() == proc_macro2::Spacing::Joint {
                    out.push(Flat::Other);
                    previous_colon = true;
                } else {
                    out.push(if ch == '$' { Flat::Dollar } else { Flat::Other });
                    previous_colon = false;
                }
            }
            TokenTree::Literal(literal) => {
                let text = literal.to_string();
                let value = syn::parse_str::<syn::LitStr>(&text)
                    .map(|l| l.value())
                    .unwrap_or(text);
                out.push(Flat::Literal(value));
                previous_colon = false;
            }
            TokenTree::Group(group) => {
                // A group ends any path before it; `None`-delimited groups come from macro_rules
                // fragments and are transparent.
                if group.delimiter() != Delimiter::None {
                    out.push(Flat::Other);
                }
                flatten(group.stream(), out);
                out.push(Flat::Other);
                previous_colon = false;
            }
        }
    }
}

/// A string that is a Rust path (`crate::de::duration`), as serde attributes hold them.
fn string_path(text: &str) -> Option<RawPath> {
    if !text.contains("::") || text.len() > 200 {
        return None;
    }
    let segments: Vec<&str> = text.split("::").collect();
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    segments
        .iter()
        .all(|s| ident(s))
        .then(|| segments.iter().map(|s| s.to_string()).collect())
}

/// Whether doc text opens a code block rustdoc would compile and run; `open` carries whether a
/// fence is open across the doc lines of an item.
fn runnable_doc_block(doc: &str, open: &mut bool) -> bool {
    let mut runnable = false;
    for line in doc.lines() {
        let Some(info) = line.trim().strip_prefix("```") else {
            continue;
        };
        if *open {
            *open = false;
            continue;
        }
        *open = true;
        let words: Vec<&str> = info
            .trim()
            .split([',', ' '])
            .filter(|w| !w.is_empty())
            .collect();
        let rust_words = ["rust", "should_panic", "no_run", "compile_fail"];
        runnable |= !words.contains(&"ignore")
            && words
                .iter()
                .all(|w| rust_words.contains(w) || w.starts_with("edition"));
    }
    runnable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_types_and_generic_self_types_are_told_apart() {
        let facts = parse_source(
            "pub struct A;\nenum B { X }\ntype C = Vec<u8>;\nimpl Show for A {}\nimpl<T: Copy> Show for T {}\nimpl Show for C {}\nimpl<'a> Show for &'a A {}\n",
        )
        .expect("parses");
        let top = &facts.modules[0];
        assert_eq!(
            top.nominal_types
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["A", "B"]
        );
        let selves: Vec<String> = top.impls.iter().map(|(s, _)| s.join("::")).collect();
        assert_eq!(selves, ["A", "", "C", ""]);
    }

    #[test]
    fn modules_uses_paths_impls_and_tests_are_collected() {
        let facts = parse_source(
            "//! Doc.\nuse crate::a::{B, c::D as E, f::*};\nmod child;\n#[path = \"x_tests.rs\"]\nmod x;\n\
             impl crate::t::Show for Thing {}\nfn f() { super::g(); let _ = format!(\"{}\", self::h::i()); }\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn one() { assert_eq!(crate::q::r(), 1); }\n}\n",
        )
        .expect("parses");
        assert_eq!(facts.modules.len(), 2);
        let top = &facts.modules[0];
        let uses: Vec<(Option<&str>, String)> = top
            .uses
            .iter()
            .map(|u| (u.alias.as_deref(), u.path.join("::")))
            .collect();
        assert_eq!(
            uses,
            [
                (Some("B"), "crate::a::B".into()),
                (Some("E"), "crate::a::c::D".into()),
                (None, "crate::a::f".into())
            ]
        );
        assert_eq!(
            top.declared
                .iter()
                .map(|d| (d.name.as_str(), d.path_attr.as_deref()))
                .collect::<Vec<_>>(),
            [("child", None), ("x", Some("x_tests.rs"))]
        );
        assert!(
            top.references
                .contains(&vec!["super".to_string(), "g".to_string()])
        );
        assert!(
            top.references.iter().any(|r| r.join("::") == "self::h::i"),
            "{:?}",
            top.references
        );
        assert_eq!(top.impls.len(), 1);
        let tests = &facts.modules[1];
        assert_eq!(tests.path, ["tests"]);
        assert_eq!(tests.tests, 1);
        assert_eq!(tests.lines, (9, 13));
        assert!(
            tests
                .references
                .iter()
                .any(|r| r.join("::") == "crate::q::r"),
            "{:?}",
            tests.references
        );
        assert!(facts.opaque.is_empty());
    }

    #[test]
    fn includes_and_unparsable_files_are_reported() {
        let facts = parse_source("const A: &str = include_str!(\"data.txt\");\ninclude!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\"));\n").expect("parses");
        assert_eq!(facts.modules[0].includes, ["data.txt"]);
        assert_eq!(facts.opaque, ["include! of source code"]);
        assert!(parse_source("fn (").is_err());
        assert!(runnable_doc_block("```\nlet x = 1;\n```", &mut false));
        assert!(!runnable_doc_block("```yaml\na: b\n```", &mut false));
        let mut open = false;
        assert!(
            !runnable_doc_block(" ```yaml", &mut open)
                && !runnable_doc_block(" a: b", &mut open)
                && !runnable_doc_block(" ```", &mut open)
        );
    }
}
