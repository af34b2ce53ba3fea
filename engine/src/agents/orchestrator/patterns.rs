//! The content detectors' patterns, as data: what an added line must not do, and which checks
//! a change must not remove. `detect.rs` applies them; each has a positive and a negative test
//! there.
//!
//! Patterns are written for the forms real code uses in the common languages (Python, JS/TS,
//! Go, Rust, Java/Kotlin, C#, Ruby, PHP, shell, YAML/HCL/Dockerfile). They match code lines
//! only: comments and blank lines are set aside by `lines.rs` before any pattern runs.

/// A rule that fires on an added code line matching any of its patterns.
pub struct AddedRule {
    pub rule: &'static str,
    pub score: u32,
    pub what: &'static str,
    /// Applies to files of application code only (not configuration or infrastructure).
    pub code_only: bool,
    pub patterns: &'static [&'static str],
}

/// A rule that fires when a file loses more lines matching `patterns` than it gains: a check
/// deleted, commented out or replaced, not merely moved within the file.
pub struct RemovedRule {
    pub rule: &'static str,
    pub score: u32,
    pub what: &'static str,
    pub patterns: &'static [&'static str],
}

pub const ADDED_RULES: &[AddedRule] = &[
    AddedRule {
        rule: "jwt_verification_weakened",
        score: 85,
        what: "token signature or claims verification weakened",
        code_only: false,
        patterns: &[
            r#"(?i)["']?\balg(?:orithm)?s?["']?\s*[:=]\s*\[?\s*["']none["']"#,
            r#"(?i)\bverify_?signature["']?\s*[:=]\s*(?:False|false|0)\b"#,
            r#"(?i)\bverify_(?:exp|aud|iss)["']?\s*[:=]\s*(?:False|false)\b"#,
            r#"\bjwt\.decode\([^)]*\bverify\s*=\s*False"#,
            r#"\bignoreExpiration\s*:\s*true\b"#,
            r#"\bSignatureAlgorithm\.NONE\b|\bAlgorithm\.none\(\)|\bAlgorithm::None\b"#,
            r#"\b(?:dangerous_insecure_decode|insecure_decode|decode_unverified|ParseUnverified|insecure_disable_signature_validation)\b"#,
            r#"\b(?:RequireSignedTokens|ValidateIssuerSigningKey|ValidateLifetime|ValidateAudience|ValidateIssuer)\s*=\s*false\b"#,
            r#"\bvalidation\.insecure_disable_signature_validation\(\)"#,
        ],
    },
    AddedRule {
        rule: "tls_verification_disabled",
        score: 85,
        what: "TLS certificate or host verification disabled",
        code_only: false,
        patterns: &[
            r#"\bverify\s*=\s*False\b"#,
            r#"\bInsecureSkipVerify\s*:\s*true\b"#,
            r#"\brejectUnauthorized["']?\s*:\s*false\b"#,
            r#"\bNODE_TLS_REJECT_UNAUTHORIZED\b\W+0\b"#,
            r#"\bCERT_NONE\b|\bVERIFY_NONE\b"#,
            r#"\bcheck_hostname\s*=\s*False\b"#,
            r#"\bdanger_accept_invalid_(?:certs|hostnames)\s*\(\s*true\s*\)"#,
            r#"\b_create_unverified_context\b"#,
            r#"(?i)["']?\b(?:ssl_?verify|verify_?ssl|verify_?peer|ssl_verify_peer|verify_?certs?|tls_?verify|strict_?ssl)["']?\s*(?:=>|[:=])\s*["']?(?:false|no|off|0)\b"#,
            r#"(?i)\binsecure[-_]?skip[-_]?tls[-_]?verify["']?\s*[:=]\s*true\b"#,
            r#"\bCURLOPT_SSL_VERIFY(?:PEER|HOST)\s*,\s*(?:false|0)\b"#,
            r#"\bcurl\b[^|;&]*\s(?:-k|--insecure)\b"#,
            r#"\bwget\b[^|;&]*--no-check-certificate\b"#,
            r#"\b(?:ALLOW_ALL_HOSTNAME_VERIFIER|NoopHostnameVerifier|TrustAllStrategy|InsecureTrustManagerFactory|trustAllCerts)\b"#,
            r#"\bServerCertificate(?:Custom)?ValidationCallback\s*=.*=>\s*true\b"#,
            r#"(?i)\bhttp\.sslverify\s+false\b"#,
        ],
    },
    AddedRule {
        rule: "permissive_hosts_or_cors",
        score: 75,
        what: "any host or any origin allowed",
        code_only: false,
        patterns: &[
            r#"\bALLOWED_HOSTS\s*=\s*[\[(]\s*["']\*["']"#,
            r#"\bCORS_(?:ORIGIN_ALLOW_ALL|ALLOW_ALL_ORIGINS)\s*=\s*True\b"#,
            r#"(?i)Access-Control-Allow-Origin["']?\s*[:,]\s*["']?\*"#,
            r#"\ballow_origins\s*=\s*\[\s*["']\*["']"#,
            r#"\borigins?["']?\s*[:=]\s*(?:["']\*["']|\[\s*["']\*["']\s*\])"#,
            r#"\borigins\s+["']\*["']"#,
            r#"\bAllowAnyOrigin\s*\(\s*\)"#,
            r#"\bAllowAllOrigins\s*[:=]\s*true\b"#,
            r#"\bAllowedOrigins\s*:\s*\[\]string\{\s*"\*""#,
            r#"\ballowedOrigin(?:s|Patterns)?\s*\(\s*"\*""#,
            r#"@CrossOrigin\s*$|@CrossOrigin\(\s*(?:origins\s*=\s*)?"\*""#,
            r#"(?i)\bcors_allowed_origins\s*[:=]\s*\[?\s*["']\*"#,
        ],
    },
    AddedRule {
        rule: "authentication_disabled",
        score: 85,
        what: "authentication or CSRF protection switched off",
        code_only: false,
        patterns: &[
            r#"\bpermission_classes\s*=\s*[\[(]\s*AllowAny\b"#,
            r#"\.permitAll\(\)|@PermitAll\b|\[AllowAnonymous\]|@AllowAnonymous\b"#,
            r#"@csrf_exempt\b|\bcsrf\(\)\.disable\(\)|\bcsrf\(\s*\w+\s*->\s*\w+\.disable\(\)\s*\)"#,
            r#"\bskip_before_action\s+:(?:authenticate\w*|verify_authenticity_token|require_login|require_user)\b"#,
            r#"\bWTF_CSRF_ENABLED\s*=\s*False\b"#,
            r#"(?i)["']?\b(?:auth|authentication|login|authorization)_?(?:required|enabled)["']?\s*[:=]\s*(?:false|0)\b"#,
            r#"\bprotect_from_forgery\s+with:\s*:null_session\b"#,
        ],
    },
    AddedRule {
        rule: "network_open_to_world",
        score: 80,
        what: "network access opened to every address",
        code_only: false,
        patterns: &[
            r#"(?:^|[^\d.])0\.0\.0\.0/0\b"#,
            r#"(?:^|[\s"'\[,=(])::/0\b"#,
            r#"(?i)\bufw\s+allow\s+from\s+any\b"#,
        ],
    },
    AddedRule {
        rule: "privilege_raised",
        score: 80,
        what: "privileges raised",
        code_only: false,
        patterns: &[
            r#"\bprivileged["']?\s*[:=]\s*true\b"#,
            r#"(?:^|\s)--privileged\b"#,
            r#"\bchmod\s+(?:-R\s+)?(?:0?777|a\+rwx|ugo\+rwx|o\+w)\b"#,
            r#"(?i)\bchmod\w*\s*\([^)]*\b0o?777\b"#,
            r#"^\s*USER\s+(?:root|0)(?:\s*$|:)"#,
            r#"\ballowPrivilegeEscalation\s*:\s*true\b"#,
            r#"\brunAsNonRoot\s*:\s*false\b"#,
            r#"\brunAsUser\s*:\s*0\b"#,
            r#"\bhost(?:Network|PID|IPC)\s*:\s*true\b"#,
            r#"\b(?:CAP_)?(?:SYS_ADMIN|SYS_PTRACE|SYS_MODULE|NET_ADMIN)\b"#,
            r#"\bNOPASSWD\s*:\s*ALL\b"#,
            r#"(?i)\b(?:seccomp|apparmor)[:=]\s*unconfined\b"#,
            r#"/var/run/docker\.sock\b"#,
            r#"\bsetuid\s*\(\s*0\s*\)"#,
            r#"(?i)\bGRANT\s+ALL\b"#,
            r#"\bname\s*:\s*cluster-admin\b"#,
        ],
    },
    AddedRule {
        rule: "weak_crypto",
        score: 80,
        what: "weak cryptography",
        code_only: false,
        patterns: &[
            r#"(?i)\b(?:md5|sha1|sha_1)\b.*\b(?:password|passwd|passphrase|pwd)\w*"#,
            r#"(?i)\b(?:password|passwd|passphrase|pwd)\w*\b.*\b(?:md5|sha1|sha_1)\b"#,
            r#"\b(?:MD5|SHA1|UnsaltedSHA1|UnsaltedMD5|Crypt)PasswordHasher\b"#,
            r#"\bMODE_ECB\b|/ECB/|\bDES\.new\b|"DES"|\bDESede\b|\b(?:A)?RC4\b|\bdes-cbc\b|Cipher\.getInstance\("AES"\)"#,
            r#"(?i)\b(?:bcrypt_?(?:rounds|cost)|log_?rounds|salt_?rounds|hash_?(?:rounds|cost))\s*[:=]\s*[1-9]\b"#,
            r#"(?i)\b(?:bcrypt|pbkdf2|passlib|argon2|scrypt|crypt)\w*\b.*\b(?:rounds|cost)\s*[:=]\s*[1-9]\b"#,
            r#"(?i)\bgensalt\s*\(\s*(?:rounds\s*=\s*)?[1-9]\s*\)"#,
            r#"(?i)(?:pbkdf2?|kdf|hash|password)\w*.*iterations\w*["']?\s*[:=]\s*\d{1,3}\b"#,
        ],
    },
    AddedRule {
        rule: "ddl_in_application_code",
        score: 80,
        what: "schema change (DDL) in application code",
        code_only: true,
        patterns: &[
            r#"(?i)["'`][^"'`]*\b(?:alter\s+table|drop\s+(?:table|index|column|database|schema|view|constraint)|create\s+(?:unique\s+)?index|truncate\s+(?:table\s+)?\w|rename\s+table)\b"#,
            r#"^\s*(?:ALTER\s+TABLE|DROP\s+(?:TABLE|INDEX|COLUMN|DATABASE|SCHEMA)|CREATE\s+(?:UNIQUE\s+)?INDEX|TRUNCATE\s+TABLE)\b"#,
        ],
    },
    AddedRule {
        rule: "errors_swallowed",
        score: 70,
        what: "errors silently ignored",
        code_only: false,
        patterns: &[
            r#"^\s*except\b[^:]*:\s*pass\s*$"#,
            r#"\bcatch\s*(?:\([^)]*\))?\s*\{\s*\}"#,
            r#"\.catch\(\s*(?:\(\s*\w*\s*\)|\w+)\s*=>\s*(?:\{\s*\}|null|undefined)\s*\)"#,
            r#"\brescue\s+nil\b|\brescue\s*(?:=>\s*\w+)?\s*;\s*nil\b"#,
            r#"^\s*_\s*=\s*err\s*$"#,
            r#"(?i)\bon\s+error\s+resume\s+next\b"#,
            r#"\|\|\s*true\s*$"#,
        ],
    },
];

pub const REMOVED_RULES: &[RemovedRule] = &[
    RemovedRule {
        rule: "auth_check_removed",
        score: 85,
        what: "authentication or authorization check removed",
        patterns: &[
            r#"@(?:login_required|permission_required|user_passes_test|requires_auth|auth_required|jwt_required|roles_required|roles_accepted|admin_required|staff_member_required|PreAuthorize|PostAuthorize|Secured|RolesAllowed|Authenticated|UseGuards)\b"#,
            r#"\[Authorize\b"#,
            r#"\b(?:is_authenticated|isAuthenticated|is_authorized|isAuthorized|require_login|requireLogin|require_auth|requireAuth|requireUser|ensure_authenticated|ensureAuthenticated|ensureLoggedIn|check_permission|checkPermission|has_perm|has_permission|hasPermission|hasRole|hasAuthority|verify_token|verifyToken|verify_jwt|verifyJWT|authorize_request|authenticate_user|authenticate_request|can_access|canAccess)\b"#,
            r#"\b(?:authenticate|authorize|authorize!)\s*[(!]"#,
            r#"\bpassport\.authenticate\b|\bAuthGuard\b|\bauthMiddleware\b|\bauth_middleware\b|\bRequireAuthorization\b|\.authenticated\(\)|\.hasRole\(|\.hasAnyRole\("#,
            r#"\bbefore_action\s+:(?:authenticate\w*|require_\w+|authorize\w*)\b"#,
            r#"\b(?:permission_classes|authentication_classes)\b|\bIsAuthenticated\b|\bIsAdminUser\b"#,
            r#"\b(?:PermissionDenied|Forbidden|Unauthorized|AccessDenied|HTTPForbidden|HTTPUnauthorized|StatusUnauthorized|StatusForbidden)\b"#,
            r#"\b(?:abort|raise|status|return|res\.status|status_code)\b.*\b(?:401|403)\b"#,
            r#"\bmiddleware\(\s*\[?\s*["']auth\b"#,
        ],
    },
    RemovedRule {
        rule: "constant_time_compare_removed",
        score: 80,
        what: "constant-time signature comparison removed",
        patterns: &[
            r#"\b(?:compare_digest|constant_time_compare|timingSafeEqual|ConstantTimeCompare|constant_time_eq|ct_eq|secure_compare|hash_equals|FixedTimeEquals|MessageDigest\.isEqual|safe_str_cmp|secureCompare)\b"#,
        ],
    },
    RemovedRule {
        rule: "signature_check_removed",
        score: 85,
        what: "signature or certificate verification removed",
        patterns: &[
            r#"\b(?:verify_signature|verifySignature|verify_webhook|verifyWebhook|check_signature|checkSignature|validate_signature|validateSignature|verify_hmac|verifyHmac)\b"#,
            r#"\b(?:jwt|jws)\.verify\s*\("#,
        ],
    },
    RemovedRule {
        rule: "error_handling_removed",
        score: 70,
        what: "error handling removed",
        patterns: &[
            // Python
            r#"^\s*(?:try\s*:|except\b[^:]*:|finally\s*:)"#,
            // C family, JS/TS, Java, Kotlin, C#, PHP, Swift, Dart
            r#"\bcatch\s*[({]|\btry\s*\{|\.catch\(|\bdo\s*\{\s*$"#,
            // Go
            r#"\berr\s*!=\s*nil\b"#,
            // Ruby
            r#"^\s*(?:rescue|ensure)\b"#,
            // Rust. `?` and `Err(e) =>` arms are left out: they are on every other line and a
            // rewritten `match` moves them around, so their count says nothing.
            r#"\.map_err\(|\bif let Err\b"#,
            // Shell
            r#"^\s*set\s+-[a-zA-Z]*e|\|\|\s*(?:exit|return)\b|\btrap\b"#,
        ],
    },
];
