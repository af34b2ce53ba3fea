//! What kind of file a path is, and what kind of change a set of files makes.
//!
//! Path rules are a table: the first matching rule names the category. Order matters:
//! a migration `.sql` file is a migration before it is code, an auth module is security
//! code before it is application code. A name can never make code look like docs: a file with
//! a code extension is code wherever it lives and whatever it is called (`license_check.go`,
//! `docs/conf.py`); docs need a docs extension, or a docs directory and no code extension.
//! Security words match whole words of the path (`auth` in `auth/` or `AuthService`, never in
//! `authority`).
//!
//! Two refinements read the change's lines (`summarize`): a manifest whose only changed lines
//! are its own version field is a release, not a dependency change, and a code file whose
//! changed lines are all comments is documentation.

use serde::Serialize;

use super::diff::ChangedFile;
use super::lines::FileLines;
use super::refine::refine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Docs,
    Tests,
    Dependencies,
    Infrastructure,
    Migration,
    Security,
    Config,
    Code,
    Binary,
    /// A manifest whose only change is the package's own version field.
    Release,
    /// A code file whose changed lines are all comments or blank.
    Comments,
    /// Settings of development tools (linters, formatters, pre-commit, dependabot): they
    /// change what CI checks, not what is built or deployed.
    Tooling,
    Other,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docs => "docs",
            Self::Tests => "tests",
            Self::Dependencies => "dependencies",
            Self::Infrastructure => "infrastructure",
            Self::Migration => "migration",
            Self::Security => "security",
            Self::Config => "config",
            Self::Code => "code",
            Self::Binary => "binary",
            Self::Release => "release",
            Self::Comments => "comments",
            Self::Tooling => "tooling",
            Self::Other => "other",
        }
    }
}

enum Pattern {
    /// The file name equals one of these (case-insensitive).
    Name(&'static [&'static str]),
    /// The file name starts with one of these.
    NamePrefix(&'static [&'static str]),
    /// The path ends with one of these.
    Suffix(&'static [&'static str]),
    /// A directory component equals one of these.
    Dir(&'static [&'static str]),
    /// A word of the path (split at punctuation and camelCase) is one of these, alone, in
    /// the plural or followed by digits (`oauth2`).
    Word(&'static [&'static str]),
    /// The file name starts with a prefix and ends with a suffix (`requirements-dev.txt`).
    NameAround(&'static [&'static str], &'static [&'static str]),
    /// A directory component is one of these and the path ends with one of the suffixes.
    DirWith(&'static [&'static str], &'static [&'static str]),
    /// Docs by path, unless the file has a code extension.
    NotCode(&'static Pattern),
}

/// Extensions of files that are code (or markup rendered as the application), whatever their
/// name or directory.
const CODE_EXTENSIONS: &[&str] = &[
    ".rs", ".py", ".pyi", ".go", ".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".java", ".kt",
    ".kts", ".scala", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".m",
    ".sh", ".bash", ".pl", ".ex", ".exs", ".erl", ".hs", ".ml", ".lua", ".r", ".dart", ".vue",
    ".svelte", ".html", ".css", ".scss", ".groovy", ".clj", ".zig", ".sql",
];

/// True when the path has a code extension.
pub fn is_code_path(path: &str) -> bool {
    let lower = path.to_lowercase();
    CODE_EXTENSIONS.iter().any(|e| lower.ends_with(e))
}

const DOCS_DIRS: Pattern = Pattern::Dir(&["docs", "doc", "documentation"]);
const DOCS_NAMES: Pattern = Pattern::NamePrefix(&[
    "readme",
    "changelog",
    "changes",
    "history",
    "license",
    "licence",
    "copying",
    "notice",
    "contributing",
    "authors",
    "code_of_conduct",
]);

const RULES: &[(Pattern, Category)] = &[
    (
        Pattern::Dir(&["migrations", "migrate", "migration", "alembic", "flyway"]),
        Category::Migration,
    ),
    (
        Pattern::Suffix(&[".sql", "schema.prisma"]),
        Category::Migration,
    ),
    (
        Pattern::Name(&[
            "cargo.toml",
            "cargo.lock",
            "package.json",
            "package-lock.json",
            "yarn.lock",
            "pnpm-lock.yaml",
            "requirements.txt",
            "pipfile",
            "pipfile.lock",
            "poetry.lock",
            "pyproject.toml",
            "setup.py",
            "setup.cfg",
            "go.mod",
            "go.sum",
            "pom.xml",
            "build.gradle",
            "build.gradle.kts",
            "gemfile",
            "gemfile.lock",
            "composer.json",
            "composer.lock",
            "uv.lock",
            "pdm.lock",
            "constraints.txt",
            "environment.yml",
            "environment.yaml",
            "bun.lockb",
            "deno.lock",
            "go.work",
            "go.work.sum",
            "mix.exs",
            "mix.lock",
            "package.swift",
            "package.resolved",
            "podfile",
            "podfile.lock",
            "pubspec.yaml",
            "pubspec.lock",
            "packages.config",
            "directory.packages.props",
            "vcpkg.json",
            "conanfile.txt",
            "conanfile.py",
            "flake.lock",
            "cabal.project",
            "stack.yaml",
            "renv.lock",
            "gradle.lockfile",
            "libs.versions.toml",
        ]),
        Category::Dependencies,
    ),
    (
        Pattern::NameAround(&["requirements", "constraints"], &[".txt", ".in", ".pip"]),
        Category::Dependencies,
    ),
    (
        Pattern::DirWith(&["requirements"], &[".txt", ".in", ".pip"]),
        Category::Dependencies,
    ),
    (
        Pattern::Suffix(&[".gemspec", ".csproj", ".fsproj", ".nuspec", ".cabal"]),
        Category::Dependencies,
    ),
    // Documents stay documents inside CI or deployment directories (`.github/CONTRIBUTING.md`).
    (
        Pattern::Suffix(&[".md", ".rst", ".adoc", ".markdown", ".asciidoc"]),
        Category::Docs,
    ),
    (
        Pattern::Name(&[
            ".pre-commit-config.yaml",
            ".pre-commit-hooks.yaml",
            ".editorconfig",
            ".gitignore",
            ".gitattributes",
            ".mailmap",
            "codeowners",
            ".flake8",
            ".pylintrc",
            "pylintrc",
            ".isort.cfg",
            "mypy.ini",
            ".mypy.ini",
            "ruff.toml",
            ".ruff.toml",
            "rustfmt.toml",
            ".rustfmt.toml",
            "clippy.toml",
            ".clippy.toml",
            "typos.toml",
            "_typos.toml",
            ".typos.toml",
            ".codespellrc",
            ".golangci.yml",
            ".golangci.yaml",
            ".prettierrc",
            ".prettierignore",
            ".eslintignore",
            ".stylelintrc",
            ".markdownlint.json",
            ".markdownlint.yaml",
            ".yamllint",
            ".yamllint.yml",
            "dependabot.yml",
            "dependabot.yaml",
            "renovate.json",
            ".coderabbit.yaml",
            "funding.yml",
        ]),
        Category::Tooling,
    ),
    (
        Pattern::NamePrefix(&[".eslintrc", ".prettierrc", ".stylelintrc"]),
        Category::Tooling,
    ),
    (
        Pattern::Name(&[
            "dockerfile",
            "containerfile",
            "docker-compose.yml",
            "docker-compose.yaml",
            "compose.yml",
            "compose.yaml",
            "jenkinsfile",
            ".gitlab-ci.yml",
            "makefile",
            "build.rs",
            ".dockerignore",
            "cmakelists.txt",
            "procfile",
            "vagrantfile",
            "skaffold.yaml",
            "tiltfile",
            ".travis.yml",
            "azure-pipelines.yml",
            "bitbucket-pipelines.yml",
            "cloudbuild.yaml",
        ]),
        Category::Infrastructure,
    ),
    (
        Pattern::NamePrefix(&["dockerfile"]),
        Category::Infrastructure,
    ),
    (
        Pattern::Suffix(&[".tf", ".tfvars", ".dockerfile", ".hcl"]),
        Category::Infrastructure,
    ),
    (
        Pattern::Dir(&[
            ".github",
            ".circleci",
            "k8s",
            "kubernetes",
            "helm",
            "charts",
            "terraform",
            "deploy",
            "infra",
            "ansible",
        ]),
        Category::Infrastructure,
    ),
    (
        Pattern::Dir(&["tests", "test", "__tests__", "spec", "testdata"]),
        Category::Tests,
    ),
    // pytest's `test_*.py`; in Go `test_helpers.go` is an ordinary (exported) source file.
    (Pattern::NameAround(&["test_"], &[".py"]), Category::Tests),
    (
        Pattern::Suffix(&[
            "_test.go",
            "_test.py",
            ".test.js",
            ".test.ts",
            ".spec.js",
            ".spec.ts",
            "_spec.rb",
            "test.java",
        ]),
        Category::Tests,
    ),
    (
        Pattern::Suffix(&[".md", ".rst", ".adoc", ".txt", ".markdown", ".asciidoc"]),
        Category::Docs,
    ),
    (Pattern::NotCode(&DOCS_DIRS), Category::Docs),
    (Pattern::NotCode(&DOCS_NAMES), Category::Docs),
    (
        Pattern::Word(&[
            "auth",
            "authn",
            "authz",
            "authenticate",
            "authentication",
            "authenticator",
            "authorize",
            "authorization",
            "authorizer",
            "login",
            "logout",
            "signin",
            "sso",
            "oidc",
            "session",
            "token",
            "crypto",
            "cryptography",
            "permission",
            "privilege",
            "password",
            "passwd",
            "secret",
            "oauth",
            "jwt",
            "acl",
            "rbac",
            "security",
            "credential",
            "csrf",
            "saml",
            "tls",
            "ssl",
        ]),
        Category::Security,
    ),
    (Pattern::NamePrefix(&[".env"]), Category::Config),
    (
        Pattern::Suffix(&[
            ".toml",
            ".yaml",
            ".yml",
            ".json",
            ".ini",
            ".cfg",
            ".conf",
            ".properties",
            ".env",
        ]),
        Category::Config,
    ),
    (Pattern::Suffix(CODE_EXTENSIONS), Category::Code),
];

/// The category of one path (binary files are decided by the diff, not the path).
pub fn categorize(path: &str) -> Category {
    let words = path_words(path);
    let lower = path.to_lowercase();
    RULES
        .iter()
        .find(|(pattern, _)| matches(pattern, &lower, &words))
        .map_or(Category::Other, |(_, category)| *category)
}

fn matches(pattern: &Pattern, lower: &str, words: &[String]) -> bool {
    let name = lower.rsplit('/').next().unwrap_or(lower);
    let mut dirs = lower.split('/').rev().skip(1);
    match pattern {
        Pattern::Name(names) => names.contains(&name),
        Pattern::NamePrefix(prefixes) => prefixes.iter().any(|p| name.starts_with(p)),
        Pattern::Suffix(suffixes) => suffixes.iter().any(|s| lower.ends_with(s)),
        Pattern::Dir(names) => dirs.any(|d| names.contains(&d)),
        Pattern::Word(list) => words.iter().any(|word| {
            list.iter().any(|w| {
                word.strip_prefix(w).is_some_and(|rest| {
                    rest.is_empty() || rest == "s" || rest.chars().all(|c| c.is_ascii_digit())
                })
            })
        }),
        Pattern::NameAround(prefixes, suffixes) => {
            prefixes.iter().any(|p| name.starts_with(p))
                && suffixes.iter().any(|s| name.ends_with(s))
        }
        Pattern::DirWith(names, suffixes) => {
            dirs.any(|d| names.contains(&d)) && suffixes.iter().any(|s| name.ends_with(s))
        }
        Pattern::NotCode(inner) => !is_code_path(lower) && matches(inner, lower, words),
    }
}

/// The words of a path, lowercased: split at anything not a letter or digit and at camelCase
/// humps (`src/AuthService.java` → src, auth, service, java).
fn path_words(path: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in path.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// The language of a file, by extension, for the report.
pub fn language(path: &str) -> Option<&'static str> {
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_lowercase())?;
    const LANGUAGES: &[(&str, &str)] = &[
        ("rs", "Rust"),
        ("py", "Python"),
        ("go", "Go"),
        ("js", "JavaScript"),
        ("ts", "TypeScript"),
        ("tsx", "TypeScript"),
        ("java", "Java"),
        ("kt", "Kotlin"),
        ("c", "C"),
        ("h", "C"),
        ("cpp", "C++"),
        ("cc", "C++"),
        ("cs", "C#"),
        ("rb", "Ruby"),
        ("php", "PHP"),
        ("swift", "Swift"),
        ("sh", "Shell"),
        ("sql", "SQL"),
        ("md", "Markdown"),
        ("yaml", "YAML"),
        ("yml", "YAML"),
        ("toml", "TOML"),
        ("json", "JSON"),
        ("tf", "Terraform"),
    ];
    LANGUAGES
        .iter()
        .find(|(e, _)| *e == extension)
        .map(|(_, l)| *l)
}

/// Facts about a whole change, derived from its files.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeSummary {
    pub files: usize,
    pub additions: u64,
    pub deletions: u64,
    pub categories: Vec<Category>,
    pub only_docs: bool,
    pub only_tests: bool,
    /// A docs-only change of a few lines.
    pub typo: bool,
    pub binary_files: usize,
    pub renames: usize,
    pub languages: Vec<&'static str>,
}

/// Categorizes each changed file by its path, then by its changed lines (`refine.rs`), and
/// sums up the change. `lines` holds the files' changed lines, matched by path.
pub fn summarize(files: &[ChangedFile], lines: &[FileLines]) -> (Vec<Category>, ChangeSummary) {
    let per_file: Vec<Category> = files
        .iter()
        .map(|f| {
            if f.binary {
                // Images and other binaries of the documentation are documentation.
                let lower = f.path.to_lowercase();
                if matches(&Pattern::NotCode(&DOCS_DIRS), &lower, &[]) {
                    Category::Docs
                } else {
                    Category::Binary
                }
            } else {
                let by_path = categorize(&f.path);
                refine(f, by_path, lines.iter().find(|l| l.path == f.path))
            }
        })
        .collect();
    let mut categories = per_file.clone();
    categories.sort();
    categories.dedup();
    let additions = files.iter().map(|f| f.additions).sum();
    let deletions = files.iter().map(|f| f.deletions).sum::<u64>();
    let only = |c: Category| !per_file.is_empty() && per_file.iter().all(|x| *x == c);
    // Comments are documentation too: a change of only docs and comments is a docs change.
    let only_docs = !per_file.is_empty()
        && per_file
            .iter()
            .all(|c| matches!(c, Category::Docs | Category::Comments));
    let mut languages: Vec<&'static str> = files.iter().filter_map(|f| language(&f.path)).collect();
    languages.sort();
    languages.dedup();
    let summary = ChangeSummary {
        files: files.len(),
        additions,
        deletions,
        only_docs,
        only_tests: only(Category::Tests),
        typo: only_docs && additions + deletions <= 4 && files.len() <= 2,
        binary_files: files.iter().filter(|f| f.binary).count(),
        renames: files.iter().filter(|f| f.status == "renamed").count(),
        languages,
        categories: categories.clone(),
    };
    (per_file, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_in_the_expected_categories() {
        let cases = [
            ("README.md", Category::Docs),
            ("docs/guide/intro.rst", Category::Docs),
            ("src/main.rs", Category::Code),
            ("src/auth/login.rs", Category::Security),
            ("app/session_store.py", Category::Security),
            ("db/migrations/0003_add_orders.sql", Category::Migration),
            ("alembic/versions/abc_add.py", Category::Migration),
            ("Cargo.lock", Category::Dependencies),
            ("web/package.json", Category::Dependencies),
            ("requirements-dev.txt", Category::Dependencies),
            ("Dockerfile", Category::Infrastructure),
            ("deploy/k8s/service.yaml", Category::Infrastructure),
            (".github/workflows/ci.yml", Category::Infrastructure),
            ("main.tf", Category::Infrastructure),
            ("tests/api.rs", Category::Tests),
            ("pkg/server_test.go", Category::Tests),
            ("config/app.toml", Category::Config),
            // Dependencies in every packaging ecosystem's spelling, never docs.
            ("requirements/base.txt", Category::Dependencies),
            ("requirements/dev.in", Category::Dependencies),
            ("requirements-test.txt", Category::Dependencies),
            ("constraints.txt", Category::Dependencies),
            ("Pipfile", Category::Dependencies),
            ("poetry.lock", Category::Dependencies),
            ("uv.lock", Category::Dependencies),
            ("go.sum", Category::Dependencies),
            ("mylib.gemspec", Category::Dependencies),
            ("CMakeLists.txt", Category::Infrastructure),
            // Security words are whole words of the path.
            ("src/AuthService.java", Category::Security),
            ("pkg/oauth2/client.go", Category::Security),
            ("api/permissions.py", Category::Security),
            ("src/certificate_authority.rs", Category::Code),
            ("lib/authors_list.rb", Category::Code),
            ("src/tokenizer.rs", Category::Code),
            ("tests/test_api.py", Category::Tests),
            ("test_utils.py", Category::Tests),
            ("test_helpers.go", Category::Code),
            (".github/CONTRIBUTING.md", Category::Docs),
            (".github/dependabot.yml", Category::Tooling),
            (".pre-commit-config.yaml", Category::Tooling),
            (".github/workflows/lint.yml", Category::Infrastructure),
        ];
        for (path, expected) in cases {
            assert_eq!(categorize(path), expected, "{path}");
        }
    }

    #[test]
    fn a_code_extension_is_code_whatever_the_name_or_directory() {
        let cases = [
            ("license_check.go", Category::Code),
            ("src/api/doc/views.py", Category::Code),
            ("src/shop/readme_auth.py", Category::Security),
            ("docs/conf.py", Category::Code),
            ("changelog_gen.sh", Category::Code),
            // Docs need a docs extension, or a docs directory and no code extension.
            ("docs/guide/install.md", Category::Docs),
            ("docs/images/flow.svg", Category::Docs),
            ("doc/man/cairn.1", Category::Docs),
            ("LICENSE", Category::Docs),
            ("LICENSE-APACHE", Category::Docs),
            ("CHANGELOG", Category::Docs),
            ("notes/auth.txt", Category::Docs),
        ];
        for (path, expected) in cases {
            assert_eq!(categorize(path), expected, "{path}");
        }
    }

    #[test]
    fn binaries_under_docs_are_docs_and_elsewhere_binary() {
        let file = |path: &str, status: &'static str| ChangedFile {
            path: path.into(),
            old_path: None,
            status,
            additions: 0,
            deletions: 0,
            binary: true,
        };
        let files = [
            file("docs/img/architecture.png", "deleted"),
            file("docs/screens/login.gif", "modified"),
        ];
        let (per_file, change) = summarize(&files, &[]);
        assert_eq!(per_file, vec![Category::Docs, Category::Docs]);
        assert!(change.only_docs);
        let (per_file, change) = summarize(&[file("assets/logo.png", "added")], &[]);
        assert_eq!(per_file, vec![Category::Binary]);
        assert!(!change.only_docs);
    }
}
