//! What kind of file a path is, and what kind of change a set of files makes.
//!
//! Path rules are a table: the first matching rule names the category. Order matters:
//! a migration `.sql` file is a migration before it is code, an auth module is security
//! code before it is application code.

use serde::Serialize;

use super::diff::ChangedFile;

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
    /// The path (lowercased) contains one of these words.
    Word(&'static [&'static str]),
}

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
        ]),
        Category::Dependencies,
    ),
    (
        Pattern::NamePrefix(&["requirements"]),
        Category::Dependencies,
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
    (Pattern::NamePrefix(&["test_"]), Category::Tests),
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
        Pattern::Suffix(&[".md", ".rst", ".adoc", ".txt", ".markdown"]),
        Category::Docs,
    ),
    (Pattern::Dir(&["docs", "doc"]), Category::Docs),
    (
        Pattern::NamePrefix(&["readme", "changelog", "license", "contributing", "authors"]),
        Category::Docs,
    ),
    (
        Pattern::Word(&[
            "auth",
            "login",
            "logout",
            "session",
            "token",
            "crypto",
            "permission",
            "password",
            "secret",
            "oauth",
            "jwt",
            "acl",
            "rbac",
            "security",
            "credential",
            "csrf",
            "saml",
        ]),
        Category::Security,
    ),
    (Pattern::Name(&[".env"]), Category::Config),
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
    (
        Pattern::Suffix(&[
            ".rs", ".py", ".go", ".js", ".jsx", ".ts", ".tsx", ".java", ".kt", ".scala", ".c",
            ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".m", ".sh", ".pl", ".ex",
            ".exs", ".erl", ".hs", ".ml", ".lua", ".r", ".dart", ".vue", ".svelte", ".html",
            ".css", ".scss",
        ]),
        Category::Code,
    ),
];

/// The category of one path (binary files are decided by the diff, not the path).
pub fn categorize(path: &str) -> Category {
    let lower = path.to_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    let dirs: Vec<&str> = lower.split('/').rev().skip(1).collect();
    for (pattern, category) in RULES {
        let hit = match pattern {
            Pattern::Name(names) => names.contains(&name),
            Pattern::NamePrefix(prefixes) => prefixes.iter().any(|p| name.starts_with(p)),
            Pattern::Suffix(suffixes) => suffixes.iter().any(|s| lower.ends_with(s)),
            Pattern::Dir(names) => dirs.iter().any(|d| names.contains(d)),
            Pattern::Word(words) => words.iter().any(|w| lower.contains(w)),
        };
        if hit {
            return *category;
        }
    }
    Category::Other
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

pub fn summarize(files: &[ChangedFile]) -> (Vec<Category>, ChangeSummary) {
    let per_file: Vec<Category> = files
        .iter()
        .map(|f| {
            if f.binary {
                Category::Binary
            } else {
                categorize(&f.path)
            }
        })
        .collect();
    let mut categories = per_file.clone();
    categories.sort();
    categories.dedup();
    let additions = files.iter().map(|f| f.additions).sum();
    let deletions = files.iter().map(|f| f.deletions).sum::<u64>();
    let only = |c: Category| !per_file.is_empty() && per_file.iter().all(|x| *x == c);
    let only_docs = only(Category::Docs);
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
        ];
        for (path, expected) in cases {
            assert_eq!(categorize(path), expected, "{path}");
        }
    }
}
