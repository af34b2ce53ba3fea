//! Unit tests of the redaction layers; the corpus of many secrets against a capture server is
//! `engine/tests/llm_redaction.rs`.

use super::*;

fn redacted(text: &str) -> Redacted {
    redact(text).expect("the built-in rules compile")
}

fn assert_gone(text: &str, secret: &str) {
    let out = redacted(text);
    assert!(
        !out.text.contains(secret),
        "`{secret}` survived: {text:?} -> {:?}",
        out.text
    );
    assert!(!out.found.is_empty(), "{text:?}");
}

#[test]
fn shaped_secrets_are_replaced() {
    let cases = [
        ("key = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        ),
        ("postgres://app:hunter2hunter@db:5432/x", "hunter2hunter"),
        ("DB_PASSWORD: \"correct-horse\"", "correct-horse"),
        (
            "Authorization: Bearer abcdefghijklmnop0123456789",
            "abcdefghijklmnop0123456789",
        ),
        ("X-Api-Key: 0123456789abcdef0123", "0123456789abcdef0123"),
        ("mysql --password=s3cr3tpass -h db", "s3cr3tpass"),
        ("sshpass -p hunter22 ssh host", "hunter22"),
        ("curl -u deploy:Tr0ub4dor https://x", "Tr0ub4dor"),
        (
            "Authorization: token 0123456789abcdef0123456789",
            "0123456789abcdef0123456789",
        ),
    ];
    for (text, secret) in cases {
        assert_gone(text, secret);
    }
}

#[test]
fn structural_forms_are_replaced() {
    let cases = [
        ("<password>Sup3r Secret</password>", "Sup3r Secret"),
        ("$config['db_password'] = 'phpSecret99';", "phpSecret99"),
        ("ds.setPassword(\"javaSecret42\");", "javaSecret42"),
        ("ENV DB_PASS hunter2-docker", "hunter2-docker"),
        ("PGPASSWORD=pgsecret77 psql -h db", "pgsecret77"),
        (
            "db.password = correct horse battery staple",
            "battery staple",
        ),
        (
            "docker login -u ci -p dockerPw55 registry.local",
            "dockerPw55",
        ),
        ("mysql -uroot -pMyRootPw9 app", "MyRootPw9"),
        ("curl --user=admin:curlPw/x+y https://h", "curlPw/x+y"),
        (
            "git clone https://bot:pa/ss+wd@git.local/repo.git",
            "pa/ss+wd",
        ),
        (
            "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=Zm9vYmFy%2BYmF6cXV4%2Fc29tZXRoaW5n%3D",
            "Zm9vYmFy%2BYmF6cXV4%2Fc29tZXRoaW5n%3D",
        ),
        (
            "echo 'c3VwZXJzZWNyZXQ=' | base64 -d > pw",
            "c3VwZXJzZWNyZXQ=",
        ),
        (
            "token = \"ghp_aBcDeFgHiJkLmNoPq\" \"RsTuVwXyZ0123456789\"",
            "RsTuVwXyZ0123456789",
        ),
        (
            "key: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
    ];
    for (text, secret) in cases {
        assert_gone(text, secret);
    }
}

#[test]
fn kubernetes_secret_data_goes_even_when_it_decodes_to_a_word() {
    let text = "+apiVersion: v1\n+kind: Secret\n+metadata:\n+  name: db\n+data:\n+  username: YWRtaW4=\n+  password: c2hvcnQ=\n+type: Opaque\n";
    let out = redacted(text);
    assert!(
        !out.text.contains("YWRtaW4=") && !out.text.contains("c2hvcnQ="),
        "{}",
        out.text
    );
    assert!(out.text.contains("name: db"), "{}", out.text);
}

#[test]
fn a_secret_found_once_is_removed_everywhere() {
    let text = "+DB_PASSWORD=Wh4tEver-pw\n connect(\"Wh4tEver-pw\")\n";
    let out = redacted(text);
    assert!(!out.text.contains("Wh4tEver-pw"), "{}", out.text);
}

#[test]
fn a_pem_key_disappears_whole() {
    let text = "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY-----\ny";
    assert_eq!(redacted(text).text, "x\n[REDACTED:private_key]\ny");
}

#[test]
fn env_files_in_diffs_lose_their_values() {
    let diff = "diff --git a/.env b/.env\n--- a/.env\n+++ b/.env\n@@ -1 +1,2 @@\n-MODE=dev\n+MODE=prod\n+SIGNING=abc\n";
    let out = redacted(diff);
    assert!(
        !out.text.contains("prod") && !out.text.contains("abc"),
        "{}",
        out.text
    );
    assert!(
        out.text.contains("+MODE=[REDACTED:env_file]"),
        "{}",
        out.text
    );
    // A code line in such a file is not an assignment: blanking it would, through the
    // text-wide scrub, blank the same line in every other file too.
    let diff = "diff --git a/.env b/.env\n--- a/.env\n+++ b/.env\n@@ -1 +1,2 @@\n for x in xs: total += x.price\n+MODE=prod\ndiff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1,2 @@\n for x in xs: total += x.price\n+y = 1\n";
    let out = redacted(diff);
    assert_eq!(
        out.text.matches("total += x.price").count(),
        2,
        "{}",
        out.text
    );
}

#[test]
fn ordinary_code_and_commit_ids_survive() {
    let texts = [
        "fn main() { let total_count = compute(items); }\ncommit 3f786850e387550fdab836ed7e6dc881de23001b",
        "+    let max_tokens = request.task.max_tokens();\n+    password_hash(&user.password)\n",
        "+api_key_env: OPENAI_API_KEY\n+    secretName: db-credentials\n",
        "+checksum = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
        "+import engine/src/llm/redact/entropy.rs\n+class ConfigurationManagerFactory:\n",
        "+    token = self.tokens.next()\n+    if password is None:\n",
    ];
    for text in texts {
        assert_eq!(redacted(text).text, text);
    }
}

#[test]
fn a_pattern_that_does_not_compile_fails_closed() {
    let error = Redactor::new(&["(unclosed".to_string()])
        .err()
        .expect("refused");
    assert!(error.to_string().contains("nothing is sent"), "{error}");
    let bad = rules::compile_table(&[("broken", "[a-", 0)])
        .err()
        .expect("refused");
    assert!(matches!(bad, RedactError::Pattern { .. }));
    let redactor = Redactor::new(&["INTERNAL-[0-9]{6}".to_string()]).expect("compiles");
    assert_eq!(
        redactor.redact("id INTERNAL-123456 here").text,
        "id [REDACTED:custom] here"
    );
}
