//! Each content detector on real-looking code: a change that must fire it, and a close one
//! that must not.

use super::*;
use crate::agents::orchestrator::classify::summarize;
use crate::agents::orchestrator::lines::parse;

/// A one-hunk patch of `path` replacing the lines `before` with `after`, behind a line of
/// unchanged context.
fn patch(path: &str, before: &str, after: &str) -> String {
    let old: Vec<&str> = before.lines().collect();
    let new: Vec<&str> = after.lines().collect();
    let mut text = format!(
        "diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -10,{} +10,{} @@\n {}\n",
        old.len() + 1,
        new.len() + 1,
        context_line(path)
    );
    for line in old {
        text.push_str(&format!("-{line}\n"));
    }
    for line in new {
        text.push_str(&format!("+{line}\n"));
    }
    text
}

fn context_line(path: &str) -> &'static str {
    if path.ends_with(".py") {
        "import os"
    } else if path.ends_with(".go") {
        "package server"
    } else {
        ""
    }
}

/// The rules fired by changing `path` from `before` to `after`.
fn rules(path: &str, before: &str, after: &str) -> Vec<&'static str> {
    reasons(path, before, after)
        .iter()
        .map(|r| r.rule)
        .collect()
}

fn reasons(path: &str, before: &str, after: &str) -> Vec<Reason> {
    let text = patch(path, before, after);
    let lines = parse(&text);
    let files = vec![ChangedFile {
        path: path.into(),
        old_path: None,
        status: "modified",
        additions: after.lines().count() as u64,
        deletions: before.lines().count() as u64,
        binary: false,
    }];
    let (per_file, _) = summarize(&files, &lines);
    detect(&files, &per_file, &lines)
}

fn fires(rule: &str, path: &str, before: &str, after: &str) {
    let found = reasons(path, before, after);
    assert!(
        found.iter().any(|r| r.rule == rule),
        "{rule} should fire on {path}:\n-{before}\n+{after}\ngot {found:#?}"
    );
}

fn quiet(rule: &str, path: &str, before: &str, after: &str) {
    let found = rules(path, before, after);
    assert!(
        !found.contains(&rule),
        "{rule} should not fire on {path}:\n-{before}\n+{after}\ngot {found:?}"
    );
}

#[test]
fn every_pattern_compiles() {
    assert!(COMPILED.is_ok(), "{:?}", COMPILED.as_ref().err());
}

#[test]
fn an_auth_check_removed_or_commented_out_fires_and_names_the_line() {
    let before = "@login_required\ndef export_orders(request):";
    fires(
        "auth_check_removed",
        "shop/views.py",
        before,
        "def export_orders(request):",
    );
    let found = reasons(
        "app/api.py",
        "    if not request.user.is_authenticated:\n        raise PermissionDenied()",
        "    # if not request.user.is_authenticated:\n    #     raise PermissionDenied()",
    );
    let reason = found
        .iter()
        .find(|r| r.rule == "auth_check_removed")
        .expect("commenting out the check fires");
    assert!(reason.detail.contains("commented out"), "{}", reason.detail);
    assert!(reason.detail.contains("app/api.py:11"), "{}", reason.detail);
    assert!(
        reason.detail.contains("is_authenticated"),
        "{}",
        reason.detail
    );
    fires(
        "auth_check_removed",
        "src/routes/admin.ts",
        "router.get('/admin/users', ensureAuthenticated, listUsers);",
        "router.get('/admin/users', listUsers);",
    );
}

#[test]
fn an_auth_check_moved_or_kept_does_not_fire() {
    quiet(
        "auth_check_removed",
        "shop/views.py",
        "@login_required\ndef export_orders(request):\n    return render(request)",
        "@login_required\ndef export_orders(request):\n    return render(request, 'orders.html')",
    );
    quiet(
        "auth_check_removed",
        "src/routes/admin.ts",
        "// TODO: ensureAuthenticated everywhere",
        "// TODO: ensureAuthenticated on every route",
    );
}

#[test]
fn tls_verification_disabled_fires() {
    fires(
        "tls_verification_disabled",
        "client/fetch.py",
        "    resp = requests.get(url, timeout=10)",
        "    resp = requests.get(url, timeout=10, verify=False)",
    );
    fires(
        "tls_verification_disabled",
        "pkg/client/http.go",
        "\tTLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},",
        "\tTLSClientConfig: &tls.Config{InsecureSkipVerify: true},",
    );
    fires(
        "tls_verification_disabled",
        "src/agent.js",
        "const agent = new https.Agent({ keepAlive: true });",
        "const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: false });",
    );
}

#[test]
fn tls_verification_kept_or_restored_does_not_fire() {
    quiet(
        "tls_verification_disabled",
        "client/fetch.py",
        "    resp = requests.get(url, verify=False)",
        "    resp = requests.get(url, verify=True)",
    );
    quiet(
        "tls_verification_disabled",
        "pkg/client/http.go",
        "\t// InsecureSkipVerify: true was removed",
        "\tTLSClientConfig: &tls.Config{InsecureSkipVerify: false},",
    );
}

#[test]
fn permissive_hosts_and_cors_fire() {
    fires(
        "permissive_hosts_or_cors",
        "mysite/settings.py",
        "ALLOWED_HOSTS = ['shop.example.com']",
        "ALLOWED_HOSTS = ['*']",
    );
    fires(
        "permissive_hosts_or_cors",
        "app/main.py",
        "app.add_middleware(CORSMiddleware, allow_origins=[\"https://shop.example.com\"])",
        "app.add_middleware(CORSMiddleware, allow_origins=[\"*\"])",
    );
    fires(
        "permissive_hosts_or_cors",
        "server/index.js",
        "app.use(cors({ origin: 'https://shop.example.com' }));",
        "app.use(cors({ origin: '*' }));",
    );
}

#[test]
fn named_hosts_and_origins_do_not_fire() {
    quiet(
        "permissive_hosts_or_cors",
        "mysite/settings.py",
        "ALLOWED_HOSTS = ['shop.example.com']",
        "ALLOWED_HOSTS = ['shop.example.com', 'api.example.com']",
    );
    quiet(
        "permissive_hosts_or_cors",
        "server/index.js",
        "app.use(cors({ origin: 'https://a.example.com' }));",
        "app.use(cors({ origin: ['https://a.example.com', 'https://b.example.com'] }));",
    );
}

#[test]
fn jwt_alg_none_and_unverified_signatures_fire() {
    fires(
        "jwt_verification_weakened",
        "auth/tokens.py",
        "    claims = jwt.decode(token, key, algorithms=[\"HS256\"])",
        "    claims = jwt.decode(token, key, algorithms=[\"none\"])",
    );
    fires(
        "jwt_verification_weakened",
        "auth/tokens.py",
        "    claims = jwt.decode(token, key, algorithms=[\"HS256\"])",
        "    claims = jwt.decode(token, options={\"verify_signature\": False})",
    );
    fires(
        "constant_time_compare_removed",
        "webhooks/github.py",
        "    if not hmac.compare_digest(expected, signature):",
        "    if expected != signature:",
    );
}

#[test]
fn jwt_with_a_real_algorithm_does_not_fire() {
    quiet(
        "jwt_verification_weakened",
        "auth/tokens.py",
        "    claims = jwt.decode(token, key, algorithms=[\"HS256\"])",
        "    claims = jwt.decode(token, key, algorithms=[\"RS256\"], audience=AUD)",
    );
    quiet(
        "constant_time_compare_removed",
        "webhooks/github.py",
        "    if not hmac.compare_digest(expected, signature):",
        "    if not hmac.compare_digest(expected.encode(), signature.encode()):",
    );
}

#[test]
fn ddl_in_application_code_fires() {
    fires(
        "ddl_in_application_code",
        "app/repository.py",
        "    cursor.execute(\"SELECT id FROM orders WHERE user_id = %s\", (uid,))",
        "    cursor.execute(\"ALTER TABLE orders ADD COLUMN note TEXT\")",
    );
    fires(
        "ddl_in_application_code",
        "src/store.rs",
        "    conn.execute(\"DELETE FROM cache WHERE expired\", [])?;",
        "    conn.execute(\"DROP TABLE cache\", [])?;",
    );
}

#[test]
fn queries_and_ddl_in_comments_or_migrations_do_not_fire() {
    quiet(
        "ddl_in_application_code",
        "app/repository.py",
        "    cursor.execute(\"SELECT id FROM orders\")",
        "    # never DROP TABLE here: migrations own the schema\n    cursor.execute(\"SELECT id, note FROM orders\")",
    );
    quiet(
        "ddl_in_application_code",
        "db/migrations/0004_note.sql",
        "",
        "ALTER TABLE orders ADD COLUMN note TEXT;",
    );
}

#[test]
fn network_opened_to_the_world_fires() {
    fires(
        "network_open_to_world",
        "infra/security_groups.tf",
        "    cidr_blocks = [\"10.0.0.0/8\"]",
        "    cidr_blocks = [\"0.0.0.0/0\"]",
    );
    fires(
        "network_open_to_world",
        "deploy/cloudformation.yaml",
        "          CidrIp: 10.20.0.0/16",
        "          CidrIpv6: ::/0",
    );
}

#[test]
fn private_ranges_and_bind_addresses_do_not_fire() {
    quiet(
        "network_open_to_world",
        "infra/security_groups.tf",
        "    cidr_blocks = [\"10.0.0.0/8\"]",
        "    cidr_blocks = [\"10.0.0.0/16\"]",
    );
    quiet(
        "network_open_to_world",
        "app/server.py",
        "    app.run(host=\"127.0.0.1\", port=8080)",
        "    app.run(host=\"0.0.0.0\", port=8080)",
    );
}

#[test]
fn env_files_fire_whatever_their_suffix() {
    let files = vec![ChangedFile {
        path: "config/.env.production".into(),
        old_path: None,
        status: "added",
        additions: 1,
        deletions: 0,
        binary: false,
    }];
    let lines = parse(
        "diff --git a/config/.env.production b/config/.env.production\n--- /dev/null\n+++ b/config/.env.production\n@@ -0,0 +1 @@\n+DATABASE_URL=postgres://db/app\n",
    );
    let (per_file, _) = summarize(&files, &lines);
    let found = detect(&files, &per_file, &lines);
    assert!(found.iter().any(|r| r.rule == "env_file"), "{found:#?}");
    quiet(
        "env_file",
        "config/settings.py",
        "DEBUG = True",
        "DEBUG = os.environ.get(\"DEBUG\") == \"1\"",
    );
}

#[test]
fn privilege_raises_fire() {
    fires(
        "privilege_raised",
        "deploy/k8s/worker.yaml",
        "          privileged: false",
        "          privileged: true",
    );
    fires(
        "privilege_raised",
        "scripts/install.sh",
        "chmod 755 /opt/app/bin/run",
        "chmod -R 777 /opt/app",
    );
    fires("privilege_raised", "Dockerfile", "USER app", "USER root");
    fires(
        "privilege_raised",
        "deploy/k8s/api.yaml",
        "            runAsNonRoot: true",
        "            runAsNonRoot: false",
    );
}

#[test]
fn least_privilege_does_not_fire() {
    quiet(
        "privilege_raised",
        "deploy/k8s/worker.yaml",
        "          privileged: true",
        "          privileged: false",
    );
    quiet(
        "privilege_raised",
        "scripts/install.sh",
        "chmod 777 /opt/app",
        "chmod 750 /opt/app",
    );
    quiet("privilege_raised", "Dockerfile", "USER root", "USER app");
}

#[test]
fn weakened_crypto_fires() {
    fires(
        "weak_crypto",
        "accounts/hashing.py",
        "    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(12))",
        "    digest = hashlib.md5(password.encode()).hexdigest()",
    );
    fires(
        "weak_crypto",
        "accounts/settings.py",
        "PBKDF2_ITERATIONS = 600000",
        "PBKDF2_ITERATIONS = 10000",
    );
    fires(
        "weak_crypto",
        "src/main/java/shop/Crypto.java",
        "        Cipher cipher = Cipher.getInstance(\"AES/GCM/NoPadding\");",
        "        Cipher cipher = Cipher.getInstance(\"AES/ECB/PKCS5Padding\");",
    );
}

#[test]
fn checksums_and_stronger_crypto_do_not_fire() {
    quiet(
        "weak_crypto",
        "storage/etag.py",
        "    etag = hashlib.sha256(body).hexdigest()",
        "    etag = hashlib.md5(body).hexdigest()",
    );
    quiet(
        "weak_crypto",
        "accounts/settings.py",
        "PBKDF2_ITERATIONS = 600000",
        "PBKDF2_ITERATIONS = 870000",
    );
    quiet(
        "weak_crypto",
        "shop/cart.py",
        "SHIPPING_COST = 12",
        "SHIPPING_COST = 5",
    );
}

#[test]
fn removed_error_handling_fires() {
    fires(
        "error_handling_removed",
        "billing/charge.py",
        "    try:\n        gateway.charge(order)\n    except GatewayError as e:\n        log.error(\"charge failed: %s\", e)\n        raise",
        "    gateway.charge(order)",
    );
    fires(
        "error_handling_removed",
        "pkg/store/save.go",
        "\tif err := s.db.Save(o); err != nil {\n\t\treturn fmt.Errorf(\"save order: %w\", err)\n\t}",
        "\ts.db.Save(o)",
    );
    fires(
        "errors_swallowed",
        "src/sync.js",
        "  await pushChanges(repo);",
        "  try { await pushChanges(repo); } catch (e) {}",
    );
}

#[test]
fn error_handling_kept_or_reworded_does_not_fire() {
    quiet(
        "error_handling_removed",
        "billing/charge.py",
        "    try:\n        gateway.charge(order)\n    except GatewayError as e:\n        log.error(\"charge failed: %s\", e)",
        "    try:\n        gateway.charge(order, idempotency_key=key)\n    except GatewayError as e:\n        log.error(\"charge %s failed: %s\", order.id, e)",
    );
    quiet(
        "errors_swallowed",
        "src/sync.js",
        "  await pushChanges(repo);",
        "  try { await pushChanges(repo); } catch (e) { log.warn(e); throw e; }",
    );
}

#[test]
fn docs_tests_and_lockfiles_are_not_read() {
    quiet(
        "permissive_hosts_or_cors",
        "docs/deploy.md",
        "",
        "ALLOWED_HOSTS = ['*']",
    );
    quiet(
        "tls_verification_disabled",
        "tests/test_client.py",
        "",
        "    requests.get(url, verify=False)",
    );
}
