//! A corpus of fake secrets in the syntaxes real repositories hold them in, placed in a
//! commit's diff the way they turn up: added lines, removed lines, unchanged context lines,
//! whole added and deleted files, and the commit message.
//!
//! The secrets are generated from a seed (`CAIRN_CORPUS_SEED`, default 13), in each vendor's
//! alphabet and length, so the rules are tested against values nobody tuned them to. Classes
//! follow the leaks found in issue 13 and the coverage of public rule sets (gitleaks,
//! detect-secrets); the rules under test are our own.

#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Where a secret sits in the commit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Place {
    Added,
    Removed,
    /// An unchanged line next to a change.
    Context,
    /// Inside a file the commit adds whole.
    NewFile,
    /// Inside a file the commit deletes whole.
    DeletedFile,
    /// In the commit message (the request's input, not the diff).
    Message,
}

pub struct Seeded {
    pub class: &'static str,
    /// Every form that must not reach the remote (the secret, its fragments, its decoding).
    pub forms: Vec<String>,
    pub file: &'static str,
    pub place: Place,
    /// The line(s) carrying it, without a diff marker.
    pub lines: Vec<String>,
}

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";

pub struct Gen {
    rng: StdRng,
}

impl Gen {
    fn from(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.rng.random_range(0..alphabet.len())] as char)
            .collect()
    }
    fn alnum(&mut self, len: usize) -> String {
        // At least one of each class, so the value looks like what vendors issue.
        let mut s = self.from(&[LOWER, UPPER, DIGITS].concat(), len.saturating_sub(3));
        s.push_str(&self.from(UPPER, 1));
        s.push_str(&self.from(DIGITS, 1));
        s.push_str(&self.from(LOWER, 1));
        s
    }
    fn upper_digits(&mut self, len: usize) -> String {
        self.from(&[UPPER, DIGITS].concat(), len)
    }
    fn hex(&mut self, len: usize) -> String {
        let mut s = self.from(b"0123456789abcdef", len - 2);
        s.push('a');
        s.push('7');
        s
    }
    fn b64(&mut self, len: usize) -> String {
        self.from(&[LOWER, UPPER, DIGITS, b"+/"].concat(), len)
    }
    fn urlsafe(&mut self, len: usize) -> String {
        self.from(&[LOWER, UPPER, DIGITS, b"-_"].concat(), len)
    }
    /// A human-chosen password: a word, digits, a symbol (some with `/`, `+`, spaces).
    fn password(&mut self) -> String {
        const WORDS: &[&str] = &[
            "Sunset", "maple", "Orbit", "tundra", "Falcon", "quartz", "Harbor", "violet",
        ];
        let word = WORDS[self.rng.random_range(0..WORDS.len())];
        let symbol = ["!", "#", "/", "+", "_", "@@"][self.rng.random_range(0..6)];
        let symbol = if symbol == "@@" { "*" } else { symbol };
        format!(
            "{word}{}{symbol}{}",
            self.from(DIGITS, 3),
            self.from(LOWER, 3)
        )
    }
    fn phrase(&mut self) -> String {
        const WORDS: &[&str] = &[
            "copper", "lantern", "orbit", "meadow", "thistle", "granite", "ember", "saffron",
        ];
        (0..4)
            .map(|_| WORDS[self.rng.random_range(0..WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
            + &self.from(DIGITS, 2)
    }
}

fn b64encode(text: &str) -> String {
    STANDARD.encode(text.as_bytes())
}

fn pct(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn corpus() -> Vec<Seeded> {
    let seed = std::env::var("CAIRN_CORPUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13);
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut out: Vec<Seeded> = Vec::new();
    let mut add =
        |class: &'static str, secret: String, file: &'static str, place: Place, line: String| {
            out.push(Seeded {
                class,
                forms: vec![secret],
                file,
                place,
                lines: vec![line],
            });
        };

    // --- Vendor-shaped tokens, in code and configuration.
    let places = [Place::Added, Place::Context, Place::Removed];
    let mut shaped: Vec<(&'static str, String, String)> = Vec::new();
    let s = format!("AKIA{}", g.upper_digits(16));
    shaped.push((
        "aws access key id",
        s.clone(),
        format!("aws_access_key_id = {s}"),
    ));
    let s = format!("ASIA{}", g.upper_digits(16));
    shaped.push((
        "aws temporary key id",
        s.clone(),
        format!("    \"AccessKeyId\": \"{s}\","),
    ));
    let s = g.b64(40);
    shaped.push((
        "aws secret key",
        s.clone(),
        format!("aws_secret_access_key={s}"),
    ));
    let s = g.b64(40);
    shaped.push((
        "aws secret key (yaml)",
        s.clone(),
        format!("  secretAccessKey: {s}"),
    ));
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        let s = format!("{prefix}{}", g.alnum(36));
        shaped.push(("github token", s.clone(), format!("const GH = \"{s}\";")));
    }
    let s = format!("github_pat_{}_{}", g.alnum(22), g.alnum(59));
    shaped.push((
        "github fine-grained pat",
        s.clone(),
        format!("git remote set-url origin https://{s}@github.com/o/r.git"),
    ));
    let s = format!("glpat-{}", g.urlsafe(20));
    shaped.push(("gitlab pat", s.clone(), format!("GITLAB = '{s}'")));
    let s = format!(
        "xoxb-{}-{}-{}",
        g.from(DIGITS, 12),
        g.from(DIGITS, 13),
        g.alnum(24)
    );
    shaped.push((
        "slack bot token",
        s.clone(),
        format!("client = WebClient({s:?})"),
    ));
    let s = format!(
        "xoxp-{}-{}-{}-{}",
        g.from(DIGITS, 12),
        g.from(DIGITS, 12),
        g.from(DIGITS, 12),
        g.hex(32)
    );
    shaped.push(("slack user token", s.clone(), format!("  slack: {s}")));
    let s = format!(
        "T{}/B{}/{}",
        g.upper_digits(8),
        g.upper_digits(10),
        g.alnum(24)
    );
    shaped.push((
        "slack webhook",
        s.clone(),
        format!("NOTIFY=https://hooks.slack.com/services/{s}"),
    ));
    let s = format!("AIza{}", g.urlsafe(35));
    shaped.push((
        "google api key",
        s.clone(),
        format!("maps.load({{ key: '{s}' }})"),
    ));
    let s = format!("GOCSPX-{}", g.urlsafe(28));
    shaped.push((
        "google oauth secret",
        s.clone(),
        format!("\"client_secret\":\"{s}\""),
    ));
    let s = format!("sk_live_{}", g.alnum(24));
    shaped.push((
        "stripe secret key",
        s.clone(),
        format!("Stripe.api_key = \"{s}\""),
    ));
    let s = format!("rk_live_{}", g.alnum(24));
    shaped.push((
        "stripe restricted key",
        s.clone(),
        format!("STRIPE_RK: {s}"),
    ));
    let s = format!("whsec_{}", g.alnum(32));
    shaped.push((
        "stripe webhook secret",
        s.clone(),
        format!("endpoint_secret = '{s}'"),
    ));
    let s = format!("sk-proj-{}", g.urlsafe(48));
    shaped.push(("openai key", s.clone(), format!("OpenAI(api_key=\"{s}\")")));
    let s = format!("sk-ant-api03-{}", g.urlsafe(93));
    shaped.push((
        "anthropic key",
        s.clone(),
        format!("anthropic = Anthropic(\"{s}\")"),
    ));
    let s = format!("hf_{}", g.from(&[LOWER, UPPER].concat(), 34));
    shaped.push(("hugging face token", s.clone(), format!("login({s:?})")));
    let s = format!("npm_{}", g.alnum(36));
    shaped.push((
        "npm token",
        s.clone(),
        format!("//registry.npmjs.org/:_authToken={s}"),
    ));
    let s = format!("pypi-AgEIcHlwaS5vcmc{}", g.urlsafe(60));
    shaped.push(("pypi token", s.clone(), format!("password = {s}")));
    let s = format!("dckr_pat_{}", g.urlsafe(27));
    shaped.push((
        "docker hub pat",
        s.clone(),
        format!("echo {s} | docker login -u ci --password-stdin"),
    ));
    let s = format!("SG.{}.{}", g.urlsafe(22), g.urlsafe(43));
    shaped.push((
        "sendgrid key",
        s.clone(),
        format!("sg = SendGridAPIClient('{s}')"),
    ));
    let s = format!("SK{}", g.hex(32));
    shaped.push((
        "twilio api key",
        s.clone(),
        format!("twilio_client = Client(\"{s}\", sid)"),
    ));
    let s = format!("shpat_{}", g.hex(32));
    shaped.push((
        "shopify token",
        s.clone(),
        format!("X-Shopify-Access-Token: {s}"),
    ));
    let s = format!("dop_v1_{}", g.hex(64));
    shaped.push((
        "digitalocean token",
        s.clone(),
        format!("doctl auth init -t {s}"),
    ));
    let s = format!("hvs.{}", g.urlsafe(24));
    shaped.push((
        "vault token",
        s.clone(),
        format!("VAULT_TOKEN={s} vault kv get secret/app"),
    ));
    let s = format!("dapi{}", g.hex(32));
    shaped.push((
        "databricks token",
        s.clone(),
        format!("databricks configure --host h --token-value {s}"),
    ));
    let s = format!("NRAK-{}", g.upper_digits(27));
    shaped.push(("new relic key", s.clone(), format!("newrelic.key({s:?})")));
    let s = format!("lin_api_{}", g.alnum(40));
    shaped.push(("linear key", s.clone(), format!("LINEAR = \"{s}\"")));
    let s = format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}",
        g.urlsafe(40),
        g.urlsafe(43)
    );
    shaped.push((
        "jwt",
        s.clone(),
        format!("curl -H 'Cookie: session={s}' https://app"),
    ));
    let s = format!("{}:AA{}", g.from(DIGITS, 10), g.urlsafe(33));
    shaped.push((
        "telegram bot token",
        s.clone(),
        format!("bot = telebot.TeleBot(\"{s}\")"),
    ));
    let s = format!("{}/{}", g.from(DIGITS, 18), g.urlsafe(68));
    shaped.push((
        "discord webhook",
        s.clone(),
        format!("WEBHOOK = 'https://discord.com/api/webhooks/{s}'"),
    ));
    let s = format!(
        "AGE-SECRET-KEY-1{}",
        g.from(b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)
    );
    shaped.push(("age secret key", s.clone(), format!("# {s}")));
    let s = g.b64(86) + "==";
    shaped.push(("azure storage key", s.clone(), format!("\"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={s};EndpointSuffix=core.windows.net\"")));
    let s = g.hex(32);
    shaped.push((
        "sentry dsn",
        s.clone(),
        format!("sentry_sdk.init(\"https://{s}@o4504.ingest.sentry.io/45\")"),
    ));
    let s = format!("glsa_{}_{}", g.alnum(32), g.hex(8));
    shaped.push((
        "grafana service token",
        s.clone(),
        format!("grafana_auth: {s}"),
    ));
    let s = format!("pul-{}", g.hex(40));
    shaped.push((
        "pulumi token",
        s.clone(),
        format!("pulumi login --token {s}"),
    ));
    let s = format!("PMAK-{}-{}", g.hex(24), g.hex(34));
    shaped.push(("postman key", s.clone(), format!("postman_api = \"{s}\"")));
    let s = format!("ya29.{}", g.urlsafe(60));
    shaped.push((
        "google oauth access token",
        s.clone(),
        format!("headers = {{'Authorization': 'Bearer {s}'}}"),
    ));
    for (index, (class, secret, line)) in shaped.into_iter().enumerate() {
        add(
            class,
            secret,
            "src/integrations.py",
            places[index % places.len()],
            line,
        );
    }

    // --- Bearer and basic credentials in headers.
    let s = g.urlsafe(40);
    add(
        "bearer token",
        s.clone(),
        "scripts/release.sh",
        Place::Added,
        format!("curl -H \"Authorization: Bearer {s}\" https://api.internal/deploy"),
    );
    let s = g.hex(40);
    add(
        "bearer token (hex)",
        s.clone(),
        "scripts/release.sh",
        Place::Added,
        format!("curl -H 'Authorization: token {s}' https://ghe.internal/api"),
    );
    let s = b64encode(&format!("deploy:{}", g.password()));
    add(
        "basic auth",
        s.clone(),
        "scripts/release.sh",
        Place::Context,
        format!("  -H \"Authorization: Basic {s}\" \\"),
    );

    // --- Private keys (every line of the body is a secret).
    for (label, file) in [
        ("RSA PRIVATE KEY", "deploy/keys/rsa.pem"),
        ("EC PRIVATE KEY", "deploy/keys/ec.pem"),
        ("OPENSSH PRIVATE KEY", "deploy/keys/id_ed25519"),
        ("PRIVATE KEY", "deploy/keys/pkcs8.pem"),
    ] {
        let body: Vec<String> = (0..3).map(|_| g.b64(64)).collect();
        let mut lines = vec![format!("-----BEGIN {label}-----")];
        lines.extend(body.iter().cloned());
        lines.push(format!("-----END {label}-----"));
        out.push(Seeded {
            class: "private key",
            forms: body,
            file,
            place: Place::NewFile,
            lines,
        });
    }
    // A key pasted inline in a modified file.
    let body: Vec<String> = (0..2).map(|_| g.b64(64)).collect();
    let mut lines = vec!["TLS_KEY = \"\"\"-----BEGIN RSA PRIVATE KEY-----".to_string()];
    lines.extend(body.iter().cloned());
    lines.push("-----END RSA PRIVATE KEY-----\"\"\"".to_string());
    out.push(Seeded {
        class: "private key (inline)",
        forms: body,
        file: "src/tls.py",
        place: Place::Added,
        lines,
    });

    let mut add =
        |class: &'static str, secret: String, file: &'static str, place: Place, line: String| {
            out.push(Seeded {
                class,
                forms: vec![secret],
                file,
                place,
                lines: vec![line],
            });
        };
    // --- Assignment-like forms beyond KEY=value.
    let p = g.password();
    add(
        "xml element",
        p.clone(),
        "config/app.xml",
        Place::Added,
        format!("  <password>{p}</password>"),
    );
    let p = g.password();
    add(
        "xml element (camel)",
        p.clone(),
        "config/app.xml",
        Place::Added,
        format!("  <dbPassword>{p}</dbPassword>"),
    );
    let p = g.password();
    add(
        "xml add key/value",
        p.clone(),
        "config/web.config",
        Place::Added,
        format!("    <add key=\"SmtpPassword\" value=\"{p}\" />"),
    );
    let p = g.password();
    add(
        "xml entry",
        p.clone(),
        "config/props.xml",
        Place::Context,
        format!("  <entry key=\"db.password\">{p}</entry>"),
    );
    let p = g.password();
    add(
        "xml attribute",
        p.clone(),
        "config/context.xml",
        Place::Added,
        format!("  <Resource name=\"jdbc/app\" username=\"app\" password=\"{p}\" />"),
    );
    let p = g.password();
    add(
        "php array",
        p.clone(),
        "app/config/database.php",
        Place::Added,
        format!("    'password' => '{p}',"),
    );
    let p = g.password();
    add(
        "php define",
        p.clone(),
        "wp-config.php",
        Place::Added,
        format!("define( 'DB_PASSWORD', '{p}' );"),
    );
    let p = g.password();
    add(
        "php variable",
        p.clone(),
        "app/config/mail.php",
        Place::Removed,
        format!("$smtp_pass = \"{p}\";"),
    );
    let p = g.password();
    add(
        "java setter",
        p.clone(),
        "src/main/java/App.java",
        Place::Added,
        format!("        dataSource.setPassword(\"{p}\");"),
    );
    let p = g.password();
    add(
        "java builder",
        p.clone(),
        "src/main/java/App.java",
        Place::Added,
        format!("            .password(\"{p}\")"),
    );
    let p = g.alnum(24);
    add(
        "java setter (token)",
        p.clone(),
        "src/main/java/App.java",
        Place::Context,
        format!("        client.setApiToken(\"{p}\");"),
    );
    let p = g.password();
    add(
        "java properties",
        p.clone(),
        "src/main/resources/application.properties",
        Place::Added,
        format!("spring.datasource.password={p}"),
    );
    let p = g.phrase();
    add(
        "password with spaces",
        p.clone(),
        "src/main/resources/application.properties",
        Place::Added,
        format!("mail.smtp.password = {p}"),
    );
    let p = g.phrase();
    add(
        "password with spaces (yaml)",
        p.clone(),
        "config/settings.yaml",
        Place::Added,
        format!("  admin_password: {p}"),
    );
    let p = g.phrase();
    add(
        "password with spaces (quoted)",
        p.clone(),
        "config/settings.yaml",
        Place::Added,
        format!("  ldap_bind_password: \"{p}\""),
    );
    let p = g.password();
    add(
        "csharp connection string",
        p.clone(),
        "appsettings.json",
        Place::Added,
        format!("    \"Default\": \"Server=db;Database=app;User Id=sa;Password={p};\""),
    );
    let p = g.password();
    add(
        "json",
        p.clone(),
        "config/local.json",
        Place::Added,
        format!("  \"dbPassword\": \"{p}\","),
    );
    let p = g.password();
    add(
        "toml",
        p.clone(),
        "config/app.toml",
        Place::Added,
        format!("password = \"{p}\""),
    );
    let p = g.password();
    add(
        "ini",
        p.clone(),
        "config/app.ini",
        Place::Context,
        format!("pass = {p}"),
    );
    let p = g.password();
    add(
        "go struct",
        p.clone(),
        "internal/db/config.go",
        Place::Added,
        format!("\t\tPassword: \"{p}\","),
    );
    let p = g.password();
    add(
        "ruby hash rocket",
        p.clone(),
        "config/initializers/mail.rb",
        Place::Added,
        format!("  :password => '{p}',"),
    );
    let p = g.password();
    add(
        "ruby keyword",
        p.clone(),
        "config/initializers/redis.rb",
        Place::Added,
        format!("Redis.new(host: 'r', password: '{p}')"),
    );
    let p = g.password();
    add(
        "python kwarg",
        p.clone(),
        "src/db.py",
        Place::Added,
        format!("conn = psycopg2.connect(host=\"db\", user=\"app\", password=\"{p}\")"),
    );
    let p = g.alnum(32);
    add(
        "python environ subscript",
        p.clone(),
        "src/settings.py",
        Place::Added,
        format!("os.environ[\"API_TOKEN\"] = \"{p}\""),
    );
    let p = g.alnum(32);
    add(
        "js object",
        p.clone(),
        "web/src/config.js",
        Place::Added,
        format!("export default {{ apiKey: \"{p}\", region: 'eu' }};"),
    );
    let p = g.password();
    add(
        "powershell",
        p.clone(),
        "scripts/setup.ps1",
        Place::Added,
        format!("$env:DB_PASSWORD = \"{p}\""),
    );
    let p = g.password();
    add(
        "jvm system property",
        p.clone(),
        "scripts/run.sh",
        Place::Added,
        format!("java -Djavax.net.ssl.keyStorePassword={p} -jar app.jar"),
    );
    let p = g.password();
    add(
        "sql identified by",
        p.clone(),
        "db/migrations/0042_users.sql",
        Place::Added,
        format!("CREATE USER 'report'@'%' IDENTIFIED BY '{p}';"),
    );
    let p = g.password();
    add(
        "sql with password",
        p.clone(),
        "db/migrations/0042_users.sql",
        Place::Added,
        format!("CREATE ROLE app WITH LOGIN PASSWORD '{p}';"),
    );
    let p = g.password();
    add(
        "python comparison",
        p.clone(),
        "src/auth.py",
        Place::Added,
        format!("    if supplied_password == \"{p}\":"),
    );
    let p = g.alnum(20);
    add(
        "netrc",
        p.clone(),
        "scripts/netrc.template",
        Place::Added,
        format!("machine api.internal login ci password {p}"),
    );

    // --- Dockerfile ENV/ARG with various names and forms.
    for (name, space) in [
        ("DB_PASS", true),
        ("MYSQL_ROOT_PASSWORD", false),
        ("SECRET_KEY_BASE", true),
        ("JWT_SECRET", false),
        ("REDIS_AUTH", true),
        ("NPM_TOKEN", false),
    ] {
        let p = if name == "SECRET_KEY_BASE" {
            g.hex(64)
        } else {
            g.password()
        };
        let line = if space {
            format!("ENV {name} {p}")
        } else {
            format!("ENV {name}={p}")
        };
        add("dockerfile env", p, "Dockerfile", Place::Added, line);
    }
    let p = g.alnum(28);
    add(
        "dockerfile arg",
        p.clone(),
        "Dockerfile",
        Place::Added,
        format!("ARG GITHUB_PAT={p}"),
    );

    // --- Shell `VAR=value cmd` prefixes and exports.
    for name in [
        "PGPASSWORD",
        "MYSQL_PWD",
        "REDISCLI_AUTH",
        "AWS_SESSION_TOKEN",
    ] {
        let p = if name == "AWS_SESSION_TOKEN" {
            g.b64(60)
        } else {
            g.password()
        };
        add(
            "shell prefix",
            p.clone(),
            "scripts/backup.sh",
            Place::Added,
            format!("{name}={p} run-backup --all"),
        );
    }
    let p = g.password();
    add(
        "shell export",
        p.clone(),
        "scripts/backup.sh",
        Place::Context,
        format!("export ADMIN_PASSWORD='{p}'"),
    );

    // --- Secrets on command lines.
    let p = g.password();
    add(
        "docker login -p",
        p.clone(),
        ".ci/publish.sh",
        Place::Added,
        format!("docker login -u ci -p {p} registry.internal"),
    );
    let p = g.password();
    add(
        "docker login --password",
        p.clone(),
        ".ci/publish.sh",
        Place::Added,
        format!("docker login --username ci --password \"{p}\" registry.internal"),
    );
    let p = g.password();
    add(
        "podman login -p",
        p.clone(),
        ".ci/publish.sh",
        Place::Removed,
        format!("podman login -p{p} -u ci quay.io"),
    );
    let p = g.password().replace(['/', '+', '*', '#', '!'], "x");
    add(
        "mysql -pX",
        p.clone(),
        ".ci/db.sh",
        Place::Added,
        format!("mysql -h db -u root -p{p} app < dump.sql"),
    );
    let p = g.password().replace(['/', '+', '*', '#', '!'], "y");
    add(
        "mysqldump -pX",
        p.clone(),
        ".ci/db.sh",
        Place::Added,
        format!("mysqldump -uroot -p{p} --all-databases > all.sql"),
    );
    let p = g.password();
    add(
        "curl --user=",
        p.clone(),
        ".ci/db.sh",
        Place::Added,
        format!("curl --user=admin:{p} https://nexus.internal/repo"),
    );
    let p = g.password();
    add(
        "curl -u",
        p.clone(),
        ".ci/db.sh",
        Place::Context,
        format!("curl -fsS -u deploy:{p} -T build.tar https://artifacts.internal/"),
    );
    let p = g.password();
    add(
        "wget --password",
        p.clone(),
        ".ci/db.sh",
        Place::Added,
        format!("wget --user=ci --password={p} https://files.internal/x.tgz"),
    );
    let p = g.password();
    add(
        "sshpass",
        p.clone(),
        ".ci/deploy.sh",
        Place::Added,
        format!("sshpass -p '{p}' ssh deploy@host"),
    );
    let p = g.alnum(24);
    add(
        "redis-cli -a",
        p.clone(),
        ".ci/deploy.sh",
        Place::Added,
        format!("redis-cli -h cache -a {p} FLUSHALL"),
    );
    let p = g.password();
    add(
        "htpasswd -b",
        p.clone(),
        ".ci/deploy.sh",
        Place::Added,
        format!("htpasswd -bc /etc/nginx/.htpasswd admin {p}"),
    );
    let p = g.password();
    add(
        "openssl -passin",
        p.clone(),
        ".ci/deploy.sh",
        Place::Added,
        format!("openssl pkcs12 -in cert.p12 -passin pass:{p} -out cert.pem"),
    );
    let p = g.password();
    add(
        "sqlcmd -P",
        p.clone(),
        ".ci/deploy.sh",
        Place::Added,
        format!("sqlcmd -S db -U sa -P {p} -Q \"SELECT 1\""),
    );
    let p = g.alnum(20);
    add(
        "--token flag",
        p.clone(),
        ".ci/deploy.sh",
        Place::Added,
        format!("./bin/deployer --env prod --api-token {p}"),
    );

    // --- URL passwords, including `/`, `+`, `:` and an empty user.
    for (scheme, host) in [
        ("postgres", "db:5432/app"),
        ("amqp", "mq:5672/"),
        ("mongodb+srv", "cluster0.internal/app"),
        ("https", "git.internal/team/repo.git"),
        ("ftp", "files.internal/"),
    ] {
        let p = format!("{}/{}+{}", g.alnum(6), g.alnum(5), g.alnum(4));
        add(
            "url password with / and +",
            p.clone(),
            "config/urls.env.example",
            Place::Added,
            format!(
                "URL_{}={scheme}://svc:{p}@{host}",
                scheme.to_uppercase().replace(['+', '-'], "_")
            ),
        );
    }
    let p = g.alnum(18);
    add(
        "url password (empty user)",
        p.clone(),
        "config/cache.yaml",
        Place::Added,
        format!("  url: redis://:{p}@cache:6379/0"),
    );
    let p = g.password();
    add(
        "url password (in code)",
        p.clone(),
        "src/db.py",
        Place::Context,
        format!("engine = create_engine(\"mysql+pymysql://app:{p}@db/app\")"),
    );

    // --- URL-encoded query signatures.
    let sig = pct(&g.b64(44));
    add(
        "azure sas signature",
        sig.clone(),
        "deploy/upload.sh",
        Place::Added,
        format!(
            "az storage blob upload --sas \"https://acct.blob.core.windows.net/c/b?sv=2022-11-02&ss=b&srt=o&sp=rw&se=2030-01-01T00%3A00%3A00Z&sig={sig}\""
        ),
    );
    let sig = pct(&g.b64(44));
    add(
        "azure sas (in code)",
        sig.clone(),
        "src/storage.py",
        Place::Added,
        format!("SAS_URL = \"https://acct.blob.core.windows.net/c?sp=r&st=2024-01-01&sig={sig}\""),
    );
    let sig = g.hex(64);
    let credential = format!("AKIA{}", g.upper_digits(16));
    out.push(Seeded {
        class: "aws presigned url",
        forms: vec![sig.clone(), credential.clone()],
        file: "docs/download.txt",
        place: Place::Added,
        lines: vec![format!("https://bucket.s3.amazonaws.com/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature={sig}")],
    });
    let mut add =
        |class: &'static str, secret: String, file: &'static str, place: Place, line: String| {
            out.push(Seeded {
                class,
                forms: vec![secret],
                file,
                place,
                lines: vec![line],
            });
        };
    let sig = pct(&g.b64(64));
    add(
        "gcs signed url",
        sig.clone(),
        "docs/download.txt",
        Place::Added,
        format!(
            "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature={sig}"
        ),
    );
    let token = g.alnum(32);
    add(
        "access_token parameter",
        token.clone(),
        "docs/download.txt",
        Place::Context,
        format!("GET /api/v1/items?page=2&access_token={token}"),
    );
    let token = pct(&format!("{}/{}=", g.alnum(20), g.alnum(10)));
    add(
        "url-encoded token",
        token.clone(),
        "docs/download.txt",
        Place::Added,
        format!("callback?state=xyz&code={token}"),
    );

    // --- Kubernetes Secrets (base64 `data:`) and `stringData:`.
    let mut k8s_lines = vec![
        "apiVersion: v1".to_string(),
        "kind: Secret".into(),
        "metadata:".into(),
        "  name: app-credentials".into(),
        "type: Opaque".into(),
        "data:".into(),
    ];
    let mut k8s_forms = Vec::new();
    for key in ["username", "password", "api-key", "database-url"] {
        let plain = match key {
            "username" => "admin".to_string(),
            "password" => g.password(),
            "api-key" => g.alnum(32),
            _ => format!("postgres://app:{}@db/app", g.alnum(12)),
        };
        let encoded = b64encode(&plain);
        k8s_lines.push(format!("  {key}: {encoded}"));
        k8s_forms.push((encoded, plain));
    }
    k8s_lines.push("stringData:".into());
    let plain_token = g.alnum(40);
    k8s_lines.push(format!("  webhook-token: {plain_token}"));
    for (index, (encoded, plain)) in k8s_forms.into_iter().enumerate() {
        let mut forms = vec![encoded];
        // `admin` is a word: its presence elsewhere is not a leak; its base64 is.
        if index > 0 {
            forms.push(plain);
        }
        out.push(Seeded {
            class: "kubernetes secret data",
            forms,
            file: "k8s/secret.yaml",
            place: Place::Added,
            lines: if index == 0 {
                k8s_lines.clone()
            } else {
                Vec::new()
            },
        });
    }
    out.push(Seeded {
        class: "kubernetes stringData",
        forms: vec![plain_token],
        file: "k8s/secret.yaml",
        place: Place::Added,
        lines: Vec::new(),
    });

    // --- Base64 decoded on the command line or in code.
    for template in [
        "echo '{}' | base64 -d > /root/.pgpass",
        "echo {} | base64 --decode | docker login -u ci --password-stdin",
        "TOKEN=$(base64 -d <<< \"{}\")",
        "key = base64.b64decode(\"{}\")",
        "const secret = atob('{}');",
    ] {
        let plain = g.password();
        let encoded = b64encode(&plain);
        out.push(Seeded {
            class: "base64 decoded",
            forms: vec![encoded.clone(), plain],
            file: "scripts/bootstrap.sh",
            place: Place::Added,
            lines: vec![template.replace("{}", &encoded)],
        });
    }

    // --- Secrets split across adjacent string literals.
    let split = |g: &mut Gen, prefix: &str, len: usize| {
        let secret = format!("{prefix}{}", g.alnum(len));
        let cut = secret.len() / 2;
        (secret[..cut].to_string(), secret[cut..].to_string())
    };
    let (a, b) = split(&mut g, "ghp_", 36);
    out.push(Seeded {
        class: "split literal (python implicit)",
        forms: vec![a.clone(), b.clone()],
        file: "src/client.py",
        place: Place::Added,
        lines: vec![format!("TOKEN = (\"{a}\""), format!("         \"{b}\")")],
    });
    let (a, b) = split(&mut g, "sk_live_", 24);
    out.push(Seeded {
        class: "split literal (java +)",
        forms: vec![a.clone(), b.clone()],
        file: "src/main/java/Pay.java",
        place: Place::Added,
        lines: vec![format!("String key = \"{a}\" + \"{b}\";")],
    });
    let (a, b) = split(&mut g, "", 30);
    out.push(Seeded {
        class: "split literal (php .)",
        forms: vec![a.clone(), b.clone()],
        file: "app/config/services.php",
        place: Place::Added,
        lines: vec![format!("$secret = '{a}' . '{b}';")],
    });
    // An access key id's alphabet is upper case and digits, as AWS issues them.
    let secret = format!("AKIA{}", g.upper_digits(16));
    let (a, b) = (secret[..10].to_string(), secret[10..].to_string());
    out.push(Seeded {
        class: "split literal (c adjacent)",
        forms: vec![a.clone(), b.clone()],
        file: "src/aws.c",
        place: Place::Added,
        lines: vec![format!("static const char *key_id = \"{a}\" \"{b}\";")],
    });
    let (a, b) = split(&mut g, "xoxb-", 40);
    out.push(Seeded {
        class: "split literal (js +)",
        forms: vec![a.clone(), b.clone()],
        file: "web/src/slack.js",
        place: Place::Added,
        lines: vec![format!("const botToken = '{a}' +"), format!("  '{b}';")],
    });
    let p1 = g.password();
    let p2 = g.password();
    out.push(Seeded {
        class: "split literal (keyed password)",
        forms: vec![p1.clone(), p2.clone()],
        file: "src/db.py",
        place: Place::Added,
        lines: vec![format!("DB_PASSWORD = \"{p1}\" + \"{p2}\"")],
    });

    // --- Long hex keys with no keyword.
    for (template, len) in [
        ("static const uint8_t k[] = \"{}\";", 64),
        ("    \"{}\",", 48),
        ("HMAC = '{}'", 64),
        ("cipher.init(\"{}\")", 32),
        ("ENCRYPTION={}", 64),
        ("app.config['SECRET_KEY'] = '{}'", 40),
    ] {
        let key = g.hex(len);
        let mut add = |class: &'static str, secret: String, line: String| {
            out.push(Seeded {
                class,
                forms: vec![secret],
                file: "src/crypto.py",
                place: Place::Added,
                lines: vec![line],
            });
        };
        add("long hex key", key.clone(), template.replace("{}", &key));
    }

    // --- High-entropy strings with no label.
    for template in [
        "salt {} rotated",
        "seed: {}",
        "[\"{}\"]",
        "init({})",
        "# {}",
    ] {
        let token = g.alnum(32);
        out.push(Seeded {
            class: "high entropy",
            forms: vec![token.clone()],
            file: "src/crypto.py",
            place: Place::Context,
            lines: vec![template.replace("{}", &token)],
        });
    }

    // --- Whole added and deleted files.
    let mut env_lines = Vec::new();
    let mut env_secrets = Vec::new();
    for name in ["DATABASE_URL", "SESSION_KEY", "ADMIN_PASS", "MODE", "SMTP"] {
        let value = match name {
            "DATABASE_URL" => format!("postgres://app:{}@db/app", g.alnum(14)),
            "MODE" => format!("prod-{}", g.alnum(8)),
            _ => g.password(),
        };
        env_lines.push(format!("{name}={value}"));
        env_secrets.push(value);
    }
    for (index, value) in env_secrets.into_iter().enumerate() {
        let forms = if value.starts_with("postgres") {
            vec![
                value
                    .split(['@', ':'])
                    .nth(2)
                    .unwrap_or_default()
                    .to_string(),
            ]
        } else {
            vec![value]
        };
        out.push(Seeded {
            class: ".env file (new)",
            forms,
            file: ".env.production",
            place: Place::NewFile,
            lines: if index == 0 {
                env_lines.clone()
            } else {
                Vec::new()
            },
        });
    }
    let p = g.password();
    let k = g.alnum(40);
    out.push(Seeded {
        class: "secrets yaml (new)",
        forms: vec![p.clone()],
        file: "config/secrets.yml",
        place: Place::NewFile,
        lines: vec![
            "production:".into(),
            format!("  db_password: {p}"),
            format!("  secret_key_base: {k}"),
        ],
    });
    out.push(Seeded {
        class: "secrets yaml (new)",
        forms: vec![k],
        file: "config/secrets.yml",
        place: Place::NewFile,
        lines: Vec::new(),
    });
    let p = g.alnum(40);
    out.push(Seeded {
        class: "credentials json (deleted)",
        forms: vec![p.clone()],
        file: "config/credentials.json",
        place: Place::DeletedFile,
        lines: vec![
            "{".into(),
            "  \"type\": \"service_account\",".into(),
            format!("  \"private_key_id\": \"{p}\","),
            "}".into(),
        ],
    });
    let p = g.password();
    out.push(Seeded {
        class: "old config (deleted)",
        forms: vec![p.clone()],
        file: "config/legacy.ini",
        place: Place::DeletedFile,
        lines: vec!["[database]".into(), format!("password = {p}")],
    });

    // --- The commit message.
    let s = format!("ghp_{}", g.alnum(36));
    out.push(Seeded {
        class: "token in commit message",
        forms: vec![s.clone()],
        file: "",
        place: Place::Message,
        lines: vec![format!("Rotate the leaked token {s}")],
    });
    let p = g.password();
    out.push(Seeded {
        class: "password in commit message",
        forms: vec![p.clone()],
        file: "",
        place: Place::Message,
        lines: vec![format!("Temporary admin password: {p} (change it)")],
    });
    out
}

/// Lines of ordinary code placed between the secrets: they must reach the remote (redaction
/// that blanks everything would pass the leak check and be useless).
pub const ORDINARY: &[&str] = &[
    "def handle_request(request):",
    "    return render(request, \"index.html\")",
    "for item in items: total += item.price",
];

/// The commit as a unified diff, and its message.
pub fn commit_text(corpus: &[Seeded]) -> (String, String) {
    let mut files: Vec<&'static str> = Vec::new();
    for seeded in corpus {
        if seeded.place != Place::Message && !files.contains(&seeded.file) {
            files.push(seeded.file);
        }
    }
    let mut diff = String::new();
    for file in files {
        let entries: Vec<&Seeded> = corpus.iter().filter(|s| s.file == file).collect();
        let place = entries[0].place;
        let mut body: Vec<String> = Vec::new();
        match place {
            Place::NewFile | Place::DeletedFile => {
                let marker = if place == Place::NewFile { '+' } else { '-' };
                for line in entries.iter().flat_map(|e| e.lines.iter()) {
                    body.push(format!("{marker}{line}"));
                }
                let count = body.len();
                let (mode, from, to, range) = if place == Place::NewFile {
                    (
                        "new file mode 100644",
                        "/dev/null".to_string(),
                        format!("b/{file}"),
                        format!("-0,0 +1,{count}"),
                    )
                } else {
                    (
                        "deleted file mode 100644",
                        format!("a/{file}"),
                        "/dev/null".to_string(),
                        format!("-1,{count} +0,0"),
                    )
                };
                diff.push_str(&format!("diff --git a/{file} b/{file}\n{mode}\nindex 0000000..e69de29\n--- {from}\n+++ {to}\n@@ {range} @@\n"));
            }
            _ => {
                let (mut old, mut new) = (0, 0);
                for (index, entry) in entries.iter().enumerate() {
                    let ordinary = ORDINARY[index % ORDINARY.len()];
                    body.push(format!(" {ordinary}"));
                    old += 1;
                    new += 1;
                    let marker = match entry.place {
                        Place::Added => '+',
                        Place::Removed => '-',
                        _ => ' ',
                    };
                    for line in &entry.lines {
                        body.push(format!("{marker}{line}"));
                        old += usize::from(marker != '+');
                        new += usize::from(marker != '-');
                    }
                    // A context line needs a change next to it to be in the diff at all.
                    if entry.place == Place::Context {
                        body.push(format!("+    log.debug(\"checked {index}\")"));
                        new += 1;
                    }
                }
                diff.push_str(&format!("diff --git a/{file} b/{file}\nindex 83db48f..bf269f4 100644\n--- a/{file}\n+++ b/{file}\n@@ -1,{old} +1,{new} @@\n"));
            }
        }
        for line in body {
            diff.push_str(&line);
            diff.push('\n');
        }
    }
    let mut message = String::from("Commit subject: move credentials into configuration\n\n");
    for seeded in corpus.iter().filter(|s| s.place == Place::Message) {
        for line in &seeded.lines {
            message.push_str(line);
            message.push('\n');
        }
    }
    (diff, message)
}

/// The corpus entries with a form present in `sent` (raw request bodies, and the message
/// contents as decoded from JSON).
pub fn leaks<'a>(corpus: &'a [Seeded], sent: &[String]) -> Vec<(&'a Seeded, String)> {
    let mut leaked = Vec::new();
    for seeded in corpus {
        for form in &seeded.forms {
            if sent.iter().any(|text| text.contains(form.as_str())) {
                leaked.push((seeded, form.clone()));
                break;
            }
        }
    }
    leaked
}
