//! The module reference graph of a Cargo workspace: one node per module of every target
//! (following `mod` declarations and `#[path]` from each crate root), and an edge from a module
//! to every module whose code it can use.
//!
//! Edges come from `use` leaves (a glob import reaching every re-export of the module it
//! names), qualified paths (`crate::`, `self::`, `super::`, child modules,
//! imported names, workspace crate names), macro calls (to the module defining the macro),
//! `impl` blocks (a type's and a trait's module reach the modules implementing them, since code
//! using the type can call those impls without naming them; a trait's module does not reach an
//! impl for a struct or enum of the crate, which runs only on a value whose maker reaches the
//! type's module), and binaries: every target of a
//! package depending on a package with binaries reaches those binaries' roots (its tests may run
//! them, as Cairn's end-to-end tests run `cairn`), as does a target naming `CARGO_BIN_EXE_x`.
//! A declaration `mod x;` alone is not an edge: a parent does not run its children's code.
//!
//! Whatever cannot be read (an unparsable file, `include!`) marks the package opaque; selection
//! then treats that package at the crate level.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::parse::{ModuleFacts, RawPath, parse_source};
use super::workspace::{Kind, Workspace};

pub type NodeId = usize;

/// (package index, target index) in the [`Workspace`].
pub type TargetRef = (usize, usize);

#[derive(Debug)]
pub struct Node {
    pub target: TargetRef,
    /// Module path within the target's crate (empty for the crate root).
    pub path: Vec<String>,
    /// File relative to the workspace root.
    pub file: String,
    pub lines: (usize, usize),
    pub facts: ModuleFacts,
}

#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    modules: HashMap<(TargetRef, Vec<String>), NodeId>,
    /// Files (sources and `include_str!`ed data) → the nodes they belong to.
    pub files: HashMap<String, Vec<NodeId>>,
    /// `edges[a]` holds every module `a` can use.
    pub edges: Vec<BTreeSet<NodeId>>,
    /// Package name → why its modules cannot be trusted.
    pub opaque: BTreeMap<String, String>,
}

impl Graph {
    pub fn build(workspace: &Workspace) -> Graph {
        let mut graph = Graph::default();
        let mut cache: HashMap<PathBuf, Result<super::parse::FileFacts, String>> = HashMap::new();
        for (p, package) in workspace.packages.iter().enumerate() {
            for (t, target) in package.targets.iter().enumerate() {
                let mut seen = BTreeSet::new();
                graph.add_file(
                    workspace,
                    &mut cache,
                    (p, t),
                    &target.root,
                    Vec::new(),
                    true,
                    &mut seen,
                );
            }
        }
        graph.edges = vec![BTreeSet::new(); graph.nodes.len()];
        graph.link(workspace);
        graph
    }

    pub fn node_name(&self, workspace: &Workspace, id: NodeId) -> String {
        let node = &self.nodes[id];
        let (p, t) = node.target;
        let package = &workspace.packages[p];
        let target = &package.targets[t];
        let module = if node.path.is_empty() {
            "(root)".to_string()
        } else {
            node.path.join("::")
        };
        format!(
            "{} {} {}",
            package.name,
            describe(target.kind, &target.name),
            module
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn add_file(
        &mut self,
        workspace: &Workspace,
        cache: &mut HashMap<PathBuf, Result<super::parse::FileFacts, String>>,
        target: TargetRef,
        file: &Path,
        module: Vec<String>,
        owns_directory: bool,
        seen: &mut BTreeSet<PathBuf>,
    ) {
        let package = &workspace.packages[target.0].name;
        if !seen.insert(file.to_path_buf()) || module.len() > 64 {
            self.opaque.insert(
                package.clone(),
                format!("{} is its own module twice", file.display()),
            );
            return;
        }
        let relative = file
            .strip_prefix(&workspace.root)
            .unwrap_or(file)
            .to_string_lossy()
            .into_owned();
        let facts = cache
            .entry(file.to_path_buf())
            .or_insert_with(|| {
                std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read: {e}"))
                    .and_then(|text| parse_source(&text))
            })
            .clone();
        let facts = match facts {
            Ok(facts) => facts,
            Err(error) => {
                self.opaque
                    .insert(package.clone(), format!("{relative}: {error}"));
                // Still a node, so a change to the file is placed (in an opaque package).
                self.push(
                    target,
                    module,
                    relative,
                    (1, usize::MAX),
                    ModuleFacts::default(),
                );
                return;
            }
        };
        if let Some(reason) = facts.opaque.first() {
            self.opaque
                .insert(package.clone(), format!("{relative}: {reason}"));
        }
        let directory = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let child_base = if owns_directory {
            directory.clone()
        } else {
            directory.join(
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        };
        for facts in facts.modules {
            let mut path = module.clone();
            path.extend(facts.path.iter().cloned());
            let inline_base = facts
                .path
                .iter()
                .fold(child_base.clone(), |base, part| base.join(part));
            let declared = facts.declared.clone();
            for include in &facts.includes {
                let included = directory.join(include);
                let included = included
                    .strip_prefix(&workspace.root)
                    .unwrap_or(&included)
                    .to_string_lossy()
                    .into_owned();
                // The node pushed just below.
                let id = self.nodes.len();
                self.files.entry(normalize(&included)).or_default().push(id);
            }
            let at_file_level = facts.path.is_empty();
            let lines = facts.lines;
            self.push(target, path.clone(), relative.clone(), lines, facts);
            for declaration in declared {
                let mut child = path.clone();
                child.push(declaration.name.clone());
                let (candidates, owns) = match &declaration.path_attr {
                    Some(attribute) if at_file_level => (vec![directory.join(attribute)], true),
                    Some(attribute) => (vec![inline_base.join(attribute)], true),
                    None => (
                        vec![
                            inline_base.join(format!("{}.rs", declaration.name)),
                            inline_base.join(&declaration.name).join("mod.rs"),
                        ],
                        false,
                    ),
                };
                match candidates.iter().find(|c| c.is_file()) {
                    Some(found) => {
                        let owns = owns || found.file_name().is_some_and(|n| n == "mod.rs");
                        self.add_file(workspace, cache, target, found, child, owns, seen);
                    }
                    // Usually a module behind a `cfg` for another platform.
                    None => {
                        tracing::debug!(module = %child.join("::"), file = %relative, "declared module has no file")
                    }
                }
            }
        }
    }

    fn push(
        &mut self,
        target: TargetRef,
        path: Vec<String>,
        file: String,
        lines: (usize, usize),
        facts: ModuleFacts,
    ) -> NodeId {
        let id = self.nodes.len();
        self.modules.insert((target, path.clone()), id);
        self.files.entry(file.clone()).or_default().push(id);
        self.nodes.push(Node {
            target,
            path,
            file,
            lines,
            facts,
        });
        id
    }

    fn link(&mut self, workspace: &Workspace) {
        // Macro name → defining nodes, for calls that name a macro without its module.
        let mut macros: HashMap<&str, Vec<NodeId>> = HashMap::new();
        for (id, node) in self.nodes.iter().enumerate() {
            for name in &node.facts.macro_defs {
                macros.entry(name.as_str()).or_default().push(id);
            }
        }
        let mut edges: Vec<(NodeId, NodeId)> = Vec::new();
        for (id, node) in self.nodes.iter().enumerate() {
            let facts = &node.facts;
            // A `pub use` the module's own code never names is a re-export: code naming the
            // item through this module is linked to where the item is defined (`land`), so
            // the re-exporting module (a crate root) does not reach what it re-exports.
            // Method calls may need any trait in scope, so a module making them keeps all.
            let used = |leaf: &&super::parse::UseLeaf| {
                !leaf.public
                    || facts.method_calls
                    || leaf
                        .alias
                        .as_ref()
                        .is_none_or(|alias| facts.names.contains(alias))
            };
            let paths = facts
                .uses
                .iter()
                .filter(used)
                .map(|u| &u.path)
                .chain(facts.references.iter())
                .chain(facts.macro_calls.iter());
            for path in paths {
                if let Some(to) = self.resolve(workspace, id, path, 0) {
                    edges.push((id, to));
                }
            }
            // A glob import (`use http::header::*`) brings in what that module re-exports:
            // the names it then uses are not resolved here, so it reaches every re-export.
            for glob in facts.uses.iter().filter(|u| u.alias.is_none()) {
                let mut stack: Vec<(NodeId, usize)> = self
                    .resolve(workspace, id, &glob.path, 0)
                    .map(|to| (to, 0))
                    .into_iter()
                    .collect();
                let mut seen = BTreeSet::new();
                while let Some((module, depth)) = stack.pop() {
                    if depth > 8 || !seen.insert(module) {
                        continue;
                    }
                    for export in self.nodes[module].facts.uses.iter().filter(|u| u.public) {
                        if let Some(to) = self.resolve(workspace, module, &export.path, 0) {
                            edges.push((id, to));
                            if export.alias.is_none() {
                                stack.push((to, depth + 1));
                            }
                        }
                    }
                }
            }
            let visible = workspace.with_dependencies(&workspace.packages[node.target.0].name);
            for call in &facts.macro_calls {
                let Some(name) = call.last() else { continue };
                for &definer in macros.get(name.as_str()).into_iter().flatten() {
                    if visible.contains(&workspace.packages[self.nodes[definer].target.0].name) {
                        edges.push((id, definer));
                    }
                }
            }
            for (self_type, trait_path) in &facts.impls {
                let owner = self.resolve(workspace, id, self_type, 0);
                if let Some(owner) = owner {
                    edges.push((owner, id));
                }
                // A trait's impl for a struct or enum of the crate runs only on a value of
                // that type, and whatever makes one reaches the type's module, which reaches
                // this one: the trait's module need not reach it. Any other self type (a
                // generic, a reference, a foreign or aliased type) may be made anywhere.
                let own_type = match (owner, self_type.as_slice()) {
                    (Some(owner), [.., name]) => {
                        self.nodes[owner].facts.nominal_types.contains(name)
                    }
                    (None, [name]) => {
                        facts.nominal_types.contains(name)
                            && !facts
                                .uses
                                .iter()
                                .any(|u| u.alias.as_deref() == Some(name.as_str()))
                    }
                    _ => false,
                };
                if own_type {
                    continue;
                }
                if let Some(owner) = trait_path
                    .as_ref()
                    .and_then(|path| self.resolve(workspace, id, path, 0))
                {
                    edges.push((owner, id));
                }
            }
            let (p, _) = node.target;
            for bin in &facts.runs_bins {
                if let Some(t) = workspace.packages[p]
                    .targets
                    .iter()
                    .position(|t| t.kind == Kind::Bin && &t.name == bin)
                    && let Some(&root) = self.modules.get(&((p, t), Vec::new()))
                {
                    edges.push((id, root));
                }
            }
            // Binaries of the packages this one depends on: its tests may run them.
            if node.path.is_empty() {
                for dependency in &workspace.packages[p].depends_on {
                    let Some(q) = workspace
                        .packages
                        .iter()
                        .position(|x| &x.name == dependency)
                    else {
                        continue;
                    };
                    for (t, target) in workspace.packages[q].targets.iter().enumerate() {
                        if target.kind == Kind::Bin
                            && let Some(&root) = self.modules.get(&((q, t), Vec::new()))
                        {
                            edges.push((id, root));
                        }
                    }
                }
            }
        }
        for (from, to) in edges {
            if from != to {
                self.edges[from].insert(to);
            }
        }
    }

    /// The module a path written in module `from` lands in: its longest known module prefix.
    fn resolve(
        &self,
        workspace: &Workspace,
        from: NodeId,
        path: &RawPath,
        depth: usize,
    ) -> Option<NodeId> {
        let node = &self.nodes[from];
        let first = path.first()?;
        if depth > 8 {
            return None;
        }
        let (target, base, rest): (TargetRef, Vec<String>, &[String]) = match first.as_str() {
            "crate" | "$crate" => (node.target, Vec::new(), &path[1..]),
            "self" => (node.target, node.path.clone(), &path[1..]),
            "super" => {
                let ups = path.iter().take_while(|s| s.as_str() == "super").count();
                let keep = node.path.len().saturating_sub(ups);
                (node.target, node.path[..keep].to_vec(), &path[ups..])
            }
            "::" => return self.resolve_extern(workspace, node.target, &path[1..]),
            name => {
                if let Some(import) = node
                    .facts
                    .uses
                    .iter()
                    .find(|u| u.alias.as_deref() == Some(name))
                {
                    if import.path.len() == 1 && import.path[0] == *name {
                        // `use name;` of an extern crate: look it up as a crate.
                        return self.resolve_extern(workspace, node.target, path);
                    }
                    let mut expanded = import.path.clone();
                    expanded.extend(path[1..].iter().cloned());
                    return self.resolve(workspace, from, &expanded, depth + 1);
                }
                let mut child = node.path.clone();
                child.push(name.to_string());
                if self.modules.contains_key(&(node.target, child)) {
                    (node.target, node.path.clone(), &path[..])
                } else {
                    return self.resolve_extern(workspace, node.target, path);
                }
            }
        };
        self.land(workspace, target, base, rest, depth)
    }

    fn resolve_extern(
        &self,
        workspace: &Workspace,
        from: TargetRef,
        path: &[String],
    ) -> Option<NodeId> {
        let name = path.first()?;
        let package = &workspace.packages[from.0];
        let own_lib = workspace.packages[from.0].targets[from.1].kind != Kind::Lib;
        let candidates = package
            .renames
            .iter()
            .filter(|(alias, _)| alias == name)
            .map(|(_, package)| package.clone())
            .chain(package.depends_on.iter().cloned())
            .chain(own_lib.then(|| package.name.clone()));
        for candidate in candidates {
            let Some(q) = workspace.packages.iter().position(|x| x.name == candidate) else {
                continue;
            };
            let renamed = package
                .renames
                .iter()
                .any(|(alias, p)| alias == name && *p == candidate);
            if !renamed && workspace.packages[q].lib_ident.as_deref() != Some(name.as_str()) {
                continue;
            }
            let Some(t) = workspace.packages[q]
                .targets
                .iter()
                .position(|t| t.kind == Kind::Lib)
            else {
                continue;
            };
            return self.land(workspace, (q, t), Vec::new(), &path[1..], 0);
        }
        None
    }

    /// The module a path lands in: its longest known module prefix, then, when the next
    /// segment is a name that module imports (`pub use a::X` in a crate root), where that
    /// import leads — the item's own module, not the module re-exporting it.
    fn land(
        &self,
        workspace: &Workspace,
        target: TargetRef,
        base: Vec<String>,
        rest: &[String],
        depth: usize,
    ) -> Option<NodeId> {
        let (id, consumed) = self.longest_prefix(target, base, rest)?;
        let left = &rest[consumed..];
        if let Some(first) = left.first()
            && depth < 8
            && let Some(import) = self.nodes[id]
                .facts
                .uses
                .iter()
                .find(|u| u.alias.as_deref() == Some(first.as_str()))
        {
            let mut path = import.path.clone();
            path.extend(left[1..].iter().cloned());
            if let Some(found) = self.resolve(workspace, id, &path, depth + 1) {
                return Some(found);
            }
        }
        Some(id)
    }

    /// The longest known module prefix of `base` + `rest`, and how many of `rest` it took.
    fn longest_prefix(
        &self,
        target: TargetRef,
        mut base: Vec<String>,
        rest: &[String],
    ) -> Option<(NodeId, usize)> {
        let mut best = self.modules.get(&(target, base.clone())).map(|&id| (id, 0));
        for (index, segment) in rest.iter().enumerate() {
            base.push(segment.clone());
            match self.modules.get(&(target, base.clone())) {
                Some(&id) => best = Some((id, index + 1)),
                None => break,
            }
        }
        best
    }

    /// Every node that can reach one of `changed`, each with the next node on its way there.
    pub fn reaching(&self, changed: &BTreeSet<NodeId>) -> BTreeMap<NodeId, Option<NodeId>> {
        let mut reverse: Vec<Vec<NodeId>> = vec![Vec::new(); self.nodes.len()];
        for (from, tos) in self.edges.iter().enumerate() {
            for &to in tos {
                reverse[to].push(from);
            }
        }
        let mut via: BTreeMap<NodeId, Option<NodeId>> =
            changed.iter().map(|&c| (c, None)).collect();
        let mut frontier: Vec<NodeId> = changed.iter().copied().collect();
        while let Some(node) = frontier.pop() {
            for &user in &reverse[node] {
                if let std::collections::btree_map::Entry::Vacant(slot) = via.entry(user) {
                    slot.insert(Some(node));
                    frontier.push(user);
                }
            }
        }
        via
    }
}

pub fn describe(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Lib => "lib".into(),
        Kind::Bin => format!("bin {name}"),
        Kind::Test => format!("test {name}"),
        Kind::Bench => format!("bench {name}"),
        Kind::Example => format!("example {name}"),
    }
}

/// `a/b/../c.txt` → `a/c.txt`, so included files match the paths git reports.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}
