//! The items of a Rust file as the reach of a change sees them: every function (outermost, as
//! `bodies.rs` keys them) and every other item — a struct, an enum, a `const`, a `static`, a
//! `use`, a `macro_rules!`, a macro call in item position, an `impl`, a `trait`, a `mod` —
//! with the lines it spans (attributes and documentation included), the names it defines and
//! the identifiers it mentions.
//!
//! `impl`, `trait` and inline `mod` items are *containers*: their own unit spans the whole
//! block, and the items inside are units of their own. A line belongs to the innermost unit
//! that spans it, so a changed line between a container's functions (its header, a `where`
//! clause, an associated `type`) is a change to the container.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;

use super::reach_package::READS_PACKAGE;

/// What kind of item a unit is, as far as the reach of a change differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A function run only at run time: a change to it reaches the tests that executed it.
    Function,
    /// A `const fn`: also evaluated at compile time, where coverage does not see it.
    ConstFunction,
    /// An `impl`, a `trait` or an inline `mod`: a change to its own lines reaches everything
    /// inside it.
    Container,
    /// A `use`: it defines only its renames, but a change to it can alter what every name it
    /// mentions resolves to in its module.
    Import,
    /// A module declared by `mod name;`: a change to it (a `cfg`, a `path`) can remove or move
    /// everything in the module's file.
    ModuleFile,
    /// Any other item: a type, a constant, a macro.
    Item,
}

/// One unit of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Where it sits and what it is: `module::Type::name` for functions (as `bodies.rs`),
    /// `module::struct Name`, `module::use …` for the others; `#2`, `#3` for repeats.
    pub key: String,
    /// First and last line, attributes included.
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
    /// A `#[test]` (or similar) function.
    pub test: bool,
    /// Declared without `pub` (outside a trait and its impls): only its module and the
    /// modules inside can name it.
    pub private: bool,
    /// Names it defines: its own, its variants and associated items (not a struct's fields,
    /// which are in `fields`).
    pub defines: BTreeSet<String>,
    /// A struct's or union's named fields, an enum's variants: a change names only those it
    /// touched, and a unit reached through its name adds only that name.
    pub fields: Vec<Field>,
    /// Every identifier in its tokens, and those of the containers' headers around it (a
    /// method of `impl Foo` uses `Foo` through `Self`).
    pub mentions: BTreeSet<String>,
}

/// One named field of a struct or union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// Its tokens as text: attributes, visibility, type.
    pub text: String,
    /// Declared without `pub`: only its module and the modules inside can name it.
    pub private: bool,
    /// An enum's variant, named as a path (`Kind::Item`) or alone, not after a `.`.
    pub variant: bool,
}

impl Unit {
    pub fn spans(&self, line: usize) -> bool {
        self.start <= line && line <= self.end
    }
}

/// Every unit of a parsed file, in file order (a container before what it holds).
pub fn units_of(file: &syn::File) -> Vec<Unit> {
    let mut finder = Finder::default();
    for item in &file.items {
        finder.item(item);
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for unit in &mut finder.found {
        let count = seen.entry(unit.key.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            unit.key = format!("{}#{count}", unit.key);
        }
    }
    finder.found
}

/// The innermost unit spanning `line`.
pub fn innermost(units: &[Unit], line: usize) -> Option<&Unit> {
    units
        .iter()
        .filter(|u| u.spans(line))
        .min_by_key(|u| u.end - u.start)
}

#[derive(Default)]
struct Finder {
    found: Vec<Unit>,
    /// Key segments of the containers around (as `bodies.rs`).
    path: Vec<String>,
    /// Identifiers of the containers' headers around.
    context: Vec<BTreeSet<String>>,
}

/// Among a module's mentions when `#[path]` places its file (or its modules' files) elsewhere:
/// never an identifier.
pub const PLACED: &str = "#[path]";

/// Keywords and the roots of paths: they name nothing a change could touch, and as names
/// they would reach everything.
const NOT_NAMES: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro_rules",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "std",
    "core",
    "alloc",
];

/// Whether `word` can name an item.
pub fn is_name(word: &str) -> bool {
    !NOT_NAMES.contains(&word)
}

/// The mention of `name` where it can name a function: not followed by `::` (a function is
/// never a path's prefix, so `cmp` in `std::cmp::Ordering` does not mention a method `cmp`),
/// unless a turbofish follows (`parse::<u8>`).
pub fn called(name: &str) -> String {
    format!("fn:{name}")
}

/// The mention of `name` as a field: after a `.`, not called (`x.name`, not `x.name()`). A
/// field is otherwise named only beside its struct's name (`Foo { name }`, or `Self` in its
/// `impl`), which is mentioned then.
pub fn accessed(name: &str) -> String {
    format!("field:{name}")
}

/// Every identifier in `tokens`, macro arguments included; see [`called`] and [`accessed`].
fn identifiers(tokens: TokenStream, into: &mut BTreeSet<String>) {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let punct = |index: usize, ch: char| matches!(trees.get(index), Some(TokenTree::Punct(p)) if p.as_char() == ch);
    for (index, tree) in trees.iter().enumerate() {
        match tree {
            TokenTree::Ident(ident) => {
                let word = ident.to_string();
                let word = word.trim_start_matches("r#");
                if !is_name(word) {
                    continue;
                }
                into.insert(word.to_string());
                let prefix = punct(index + 1, ':') && punct(index + 2, ':');
                if !prefix || punct(index + 3, '<') {
                    into.insert(called(word));
                }
                let arguments = matches!(
                    trees.get(index + 1),
                    Some(TokenTree::Group(g)) if g.delimiter() == proc_macro2::Delimiter::Parenthesis
                );
                if index > 0 && punct(index - 1, '.') && !arguments && !prefix {
                    into.insert(accessed(word));
                }
            }
            TokenTree::Group(group) => identifiers(group.stream(), into),
            TokenTree::Literal(literal) => {
                let text = literal.to_string();
                if ["CARGO_PKG", "Cargo.toml", "Cargo.lock"]
                    .iter()
                    .any(|n| text.contains(n))
                {
                    into.insert(READS_PACKAGE.to_string());
                }
            }
            TokenTree::Punct(_) => {}
        }
    }
}

fn mentioned(node: &impl ToTokens) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    identifiers(node.to_token_stream(), &mut found);
    found
}

fn named_fields<'a>(fields: impl IntoIterator<Item = &'a syn::Field>) -> Vec<Field> {
    fields
        .into_iter()
        .filter_map(|f| {
            Some(Field {
                name: f.ident.as_ref()?.to_string(),
                text: tokens(f),
                private: matches!(f.vis, syn::Visibility::Inherited),
                variant: false,
            })
        })
        .collect()
}

impl Finder {
    fn push(&mut self, node: &impl ToTokens, label: String, kind: Kind, defines: BTreeSet<String>) {
        self.push_with(node, label, kind, defines, false);
    }

    fn push_with(
        &mut self,
        node: &impl ToTokens,
        label: String,
        kind: Kind,
        defines: BTreeSet<String>,
        test: bool,
    ) {
        let span = node.to_token_stream();
        let (start, end) = lines_of(span);
        let mut mentions = mentioned(node);
        for around in &self.context {
            mentions.extend(around.iter().cloned());
        }
        let mut key = self.path.clone();
        key.push(label);
        self.found.push(Unit {
            key: key.join("::"),
            start,
            end,
            kind,
            test,
            private: false,
            defines,
            fields: Vec::new(),
            mentions,
        });
    }

    /// An associated const or type (`name`), or a macro call inside an `impl` or `trait`
    /// (defining whatever it names).
    fn associated(&mut self, node: &impl ToTokens, name: Option<String>) {
        let (label, defines) = match name {
            Some(name) => (name.clone(), BTreeSet::from([name])),
            None => (tokens(node), mentioned(node)),
        };
        self.push(node, label, Kind::Item, defines);
    }

    /// Marks the module just pushed when a `#[path]` gives its file another place.
    fn placed(&mut self, attributes: &[syn::Attribute]) {
        if let Some(unit) = self
            .found
            .last_mut()
            .filter(|_| attributes.iter().any(|a| a.path().is_ident("path")))
        {
            unit.mentions.insert(PLACED.to_string());
        }
    }

    /// Marks the unit just pushed private when declared without `pub`.
    fn visible(&mut self, visibility: &syn::Visibility) {
        if let Some(unit) = self.found.last_mut() {
            unit.private = matches!(visibility, syn::Visibility::Inherited);
        }
    }

    /// Gives the unit just pushed its fields.
    fn with_fields(&mut self, fields: Vec<Field>) {
        if let Some(unit) = self.found.last_mut() {
            unit.fields = fields;
        }
    }

    fn function(
        &mut self,
        name: &syn::Ident,
        node: &impl ToTokens,
        sig: &syn::Signature,
        attrs: &[syn::Attribute],
    ) {
        let kind = if sig.constness.is_some() {
            Kind::ConstFunction
        } else {
            Kind::Function
        };
        self.push_with(
            node,
            name.to_string(),
            kind,
            BTreeSet::from([called(&name.to_string())]),
            is_test(attrs),
        );
    }

    /// A container's own unit, then what it holds, under `segment`.
    fn enter(
        &mut self,
        node: &impl ToTokens,
        segment: String,
        label: String,
        header: BTreeSet<String>,
        defines: BTreeSet<String>,
    ) {
        let (start, end) = lines_of(node.to_token_stream());
        let mut key = self.path.clone();
        key.push(label);
        let mut mentions = header.clone();
        for around in &self.context {
            mentions.extend(around.iter().cloned());
        }
        self.found.push(Unit {
            key: key.join("::"),
            start,
            end,
            kind: Kind::Container,
            test: false,
            private: false,
            defines,
            fields: Vec::new(),
            mentions,
        });
        self.path.push(segment);
        self.context.push(header);
    }

    fn leave(&mut self) {
        self.path.pop();
        self.context.pop();
    }

    fn item(&mut self, item: &syn::Item) {
        let named = |ident: &syn::Ident| BTreeSet::from([ident.to_string()]);
        match item {
            syn::Item::Fn(f) => {
                self.function(&f.sig.ident, f, &f.sig, &f.attrs);
                self.visible(&f.vis);
            }
            syn::Item::Mod(m) => match &m.content {
                Some((_, items)) => {
                    let mut header: BTreeSet<String> = m.attrs.iter().flat_map(mentioned).collect();
                    header.insert(m.ident.to_string());
                    if m.attrs.iter().any(|a| a.path().is_ident("path")) {
                        header.insert(PLACED.to_string());
                    }
                    self.enter(
                        m,
                        m.ident.to_string(),
                        format!("mod {}", m.ident),
                        header,
                        named(&m.ident),
                    );
                    for inner in items {
                        self.item(inner);
                    }
                    self.leave();
                }
                None => {
                    self.push(
                        m,
                        format!("mod {}", m.ident),
                        Kind::ModuleFile,
                        named(&m.ident),
                    );
                    self.placed(&m.attrs);
                }
            },
            syn::Item::Impl(i) => {
                let self_type = tokens(&i.self_ty);
                let owner = match &i.trait_ {
                    Some((_, path, _)) => format!("<{self_type} as {}>", tokens(path)),
                    None => self_type,
                };
                let mut header = mentioned(&i.self_ty);
                header.extend(mentioned(&i.generics));
                if let Some((_, path, _)) = &i.trait_ {
                    header.extend(mentioned(path));
                }
                for attr in &i.attrs {
                    header.extend(mentioned(attr));
                }
                let defines = i.items.iter().filter_map(impl_item_name).collect();
                self.enter(i, owner.clone(), format!("impl {owner}"), header, defines);
                for inner in &i.items {
                    match inner {
                        syn::ImplItem::Fn(f) => {
                            self.function(&f.sig.ident, f, &f.sig, &f.attrs);
                            // A trait's methods are as public as the trait.
                            if i.trait_.is_none() {
                                self.visible(&f.vis);
                            }
                        }
                        other => self.associated(other, impl_item_name(other)),
                    }
                }
                self.leave();
            }
            syn::Item::Trait(t) => {
                let mut header = mentioned(&t.generics);
                header.extend(t.supertraits.iter().flat_map(mentioned));
                header.insert(t.ident.to_string());
                let mut defines: BTreeSet<String> =
                    t.items.iter().filter_map(trait_item_name).collect();
                defines.insert(t.ident.to_string());
                self.enter(
                    t,
                    format!("trait {}", t.ident),
                    format!("trait {}", t.ident),
                    header,
                    defines,
                );
                for inner in &t.items {
                    match inner {
                        syn::TraitItem::Fn(f) => self.function(&f.sig.ident, f, &f.sig, &f.attrs),
                        other => self.associated(other, trait_item_name(other)),
                    }
                }
                self.leave();
            }
            syn::Item::Struct(s) => {
                self.push(
                    s,
                    format!("struct {}", s.ident),
                    Kind::Item,
                    named(&s.ident),
                );
                self.with_fields(named_fields(&s.fields));
                self.visible(&s.vis);
            }
            syn::Item::Union(u) => {
                self.push(u, format!("union {}", u.ident), Kind::Item, named(&u.ident));
                self.with_fields(named_fields(&u.fields.named));
                self.visible(&u.vis);
            }
            syn::Item::Enum(e) => {
                self.push(e, format!("enum {}", e.ident), Kind::Item, named(&e.ident));
                let variants = e
                    .variants
                    .iter()
                    .map(|v| Field {
                        name: v.ident.to_string(),
                        text: tokens(v),
                        private: false,
                        variant: true,
                    })
                    .collect();
                self.with_fields(variants);
                self.visible(&e.vis);
            }
            syn::Item::Const(c) => {
                self.push(c, format!("const {}", c.ident), Kind::Item, named(&c.ident));
                self.visible(&c.vis);
            }
            syn::Item::Static(s) => self.push(
                s,
                format!("static {}", s.ident),
                Kind::Item,
                named(&s.ident),
            ),
            syn::Item::Type(t) => {
                self.push(t, format!("type {}", t.ident), Kind::Item, named(&t.ident));
                self.visible(&t.vis);
            }
            syn::Item::TraitAlias(t) => {
                self.push(t, format!("trait {}", t.ident), Kind::Item, named(&t.ident))
            }
            syn::Item::Macro(m) => {
                // `macro_rules! name` defines `name`; any other call may define anything its
                // tokens name.
                let defines = match &m.ident {
                    Some(ident) => named(ident),
                    None => mentioned(&m.mac.tokens),
                };
                let label = match &m.ident {
                    Some(ident) => format!("macro {ident}"),
                    None => format!("{}!", tokens(&m.mac)),
                };
                self.push(m, label, Kind::Item, defines);
            }
            syn::Item::Use(u) => {
                let mut renames = BTreeSet::new();
                renamed(&u.tree, &mut renames);
                self.push(u, tokens(u), Kind::Import, renames);
            }
            // An extern crate or block, or anything newer than this parser: every name it
            // mentions is what it defines (it may change what those names resolve to).
            other => {
                let defines = mentioned(other);
                self.push(other, tokens(other), Kind::Item, defines);
            }
        }
    }
}

fn is_test(attributes: &[syn::Attribute]) -> bool {
    super::parse::Collector::has_test_attribute(attributes)
}

/// Tokens as text with single spaces (the same for the same code, whatever its layout).
fn tokens(node: &impl quote::ToTokens) -> String {
    node.to_token_stream().to_string()
}

/// The names a `use` tree introduces under another name (`as`), as names and as calls.
fn renamed(tree: &syn::UseTree, into: &mut BTreeSet<String>) {
    match tree {
        syn::UseTree::Path(path) => renamed(&path.tree, into),
        syn::UseTree::Rename(rename) => {
            let name = rename.rename.to_string();
            into.insert(called(&name));
            into.insert(name);
        }
        syn::UseTree::Group(group) => group.items.iter().for_each(|t| renamed(t, into)),
        syn::UseTree::Name(_) | syn::UseTree::Glob(_) => {}
    }
}

fn impl_item_name(item: &syn::ImplItem) -> Option<String> {
    match item {
        syn::ImplItem::Fn(f) => Some(called(&f.sig.ident.to_string())),
        syn::ImplItem::Const(c) => Some(c.ident.to_string()),
        syn::ImplItem::Type(t) => Some(t.ident.to_string()),
        _ => None,
    }
}

fn trait_item_name(item: &syn::TraitItem) -> Option<String> {
    match item {
        syn::TraitItem::Fn(f) => Some(called(&f.sig.ident.to_string())),
        syn::TraitItem::Const(c) => Some(c.ident.to_string()),
        syn::TraitItem::Type(t) => Some(t.ident.to_string()),
        _ => None,
    }
}

/// First and last line of a node's tokens (attributes are tokens of their item).
fn lines_of(tokens: TokenStream) -> (usize, usize) {
    let mut first = usize::MAX;
    let mut last = 0;
    for tree in tokens {
        let span = tree.span();
        first = first.min(span.start().line);
        last = last.max(span.end().line);
    }
    if first == usize::MAX {
        (0, 0)
    } else {
        (first, last)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    fn units(text: &str) -> Result<Vec<Unit>, syn::Error> {
        syn::parse_file(text).map(|file| units_of(&file))
    }

    #[test]
    fn functions_are_keyed_by_where_they_sit_and_other_items_by_what_they_are() {
        let text = "fn free() -> u8 {\n    fn inner() {}\n    1\n}\n\
                    struct S;\n\
                    impl S {\n    const fn k() -> u8 { 3 }\n    fn m(&self) {\n        let _ = || 1;\n    }\n}\n\
                    impl std::fmt::Display for S {\n    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {\n        write!(f, \"s\")\n    }\n}\n\
                    trait T {\n    fn d(&self) -> u8 {\n        0\n    }\n}\n\
                    #[cfg(unix)]\nfn os() {}\n#[cfg(not(unix))]\nfn os() {}\n\
                    mod tests {\n    #[test]\n    fn t() {\n        assert_eq!(super::free(), 1);\n    }\n}\n";
        let found: Vec<Unit> = units(text)
            .unwrap()
            .into_iter()
            .filter(|u| matches!(u.kind, Kind::Function | Kind::ConstFunction))
            .collect();
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
        assert_eq!((free.start, free.end), (1, 4));
        assert_eq!(found[1].kind, Kind::ConstFunction);
        assert_eq!(found[2].kind, Kind::Function);
        assert!(found[7].test && !found[0].test);
        assert_eq!((found[7].start, found[7].end), (27, 30));
        assert!(units("fn (").is_err());
    }
}
