//! `/healthz`, `/livez` and `/readyz` answers, as upstream's `healthz` package renders them:
//! `ok`, or with `?verbose` one `[+]name ok` / `[-]name failed: reason withheld` line per check
//! and `<endpoint> check passed|failed`; `?exclude=name` skips a check; `/<endpoint>/<name>`
//! runs one check. Pure: the check results are passed in.

/// One check's name and its failure, if it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// e.g. `ping`, `poststarthook/start-service-ip-repair-controllers`.
    pub name: &'static str,
    /// `Some(reason)` when failing.
    pub failure: Option<String>,
}

/// The checks of each endpoint: `livez` and `healthz` leave out the readiness-only ones.
pub fn applies(endpoint: &str, check: &str) -> bool {
    endpoint == "readyz"
        || !matches!(
            check,
            "shutdown" | "poststarthook/start-service-ip-repair-controllers"
        )
}

/// Renders `/<endpoint>[/<sub>]?verbose&exclude=...`: (HTTP code, text body).
pub fn render(
    endpoint: &str,
    sub: Option<&str>,
    checks: &[Check],
    verbose: bool,
    exclude: &[String],
) -> (u16, String) {
    let checks: Vec<&Check> = checks
        .iter()
        .filter(|c| applies(endpoint, c.name))
        .collect();
    if let Some(sub) = sub.filter(|s| !s.is_empty()) {
        return match checks.iter().find(|c| c.name == sub) {
            Some(Check { failure: None, .. }) => (200, "ok".into()),
            Some(Check {
                failure: Some(why), ..
            }) => (500, format!("internal server error: {why}\n")),
            None => (404, "404 page not found\n".into()),
        };
    }
    let mut out = String::new();
    let mut failed = false;
    for c in &checks {
        if exclude.iter().any(|e| e == c.name) {
            out.push_str(&format!("[+]{} excluded: ok\n", c.name));
            continue;
        }
        match &c.failure {
            None => out.push_str(&format!("[+]{} ok\n", c.name)),
            Some(_) => {
                failed = true;
                out.push_str(&format!("[-]{} failed: reason withheld\n", c.name));
            }
        }
    }
    let unknown: Vec<&str> = exclude
        .iter()
        .filter(|e| !checks.iter().any(|c| c.name == e.as_str()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        out.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            unknown
                .iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if failed {
        return (500, format!("{out}{endpoint} check failed\n"));
    }
    if !verbose {
        return (200, "ok".into());
    }
    (200, format!("{out}{endpoint} check passed\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(repair_done: bool) -> Vec<Check> {
        vec![
            Check {
                name: "ping",
                failure: None,
            },
            Check {
                name: "storage",
                failure: None,
            },
            Check {
                name: "poststarthook/start-service-ip-repair-controllers",
                failure: (!repair_done).then(|| "not finished".to_string()),
            },
        ]
    }

    #[test]
    fn verbose_readyz_lists_every_check() {
        let (code, body) = render("readyz", None, &checks(true), true, &[]);
        assert_eq!(code, 200);
        assert_eq!(
            body,
            "[+]ping ok\n[+]storage ok\n[+]poststarthook/start-service-ip-repair-controllers ok\nreadyz check passed\n"
        );
        assert_eq!(
            render("readyz", None, &checks(true), false, &[]),
            (200, "ok".into())
        );
    }

    #[test]
    fn a_failing_check_fails_readyz_but_not_livez_and_withholds_the_reason() {
        let (code, body) = render("readyz", None, &checks(false), false, &[]);
        assert_eq!(code, 500);
        assert!(body.contains(
            "[-]poststarthook/start-service-ip-repair-controllers failed: reason withheld\n"
        ));
        assert!(body.ends_with("readyz check failed\n"));
        assert!(!body.contains("not finished"));
        let (code, body) = render("livez", None, &checks(false), true, &[]);
        assert_eq!(code, 200);
        assert_eq!(body, "[+]ping ok\n[+]storage ok\nlivez check passed\n");
    }

    #[test]
    fn one_check_can_be_asked_for_or_excluded() {
        assert_eq!(
            render("readyz", Some("ping"), &checks(false), false, &[]),
            (200, "ok".into())
        );
        let (code, body) = render(
            "readyz",
            Some("poststarthook/start-service-ip-repair-controllers"),
            &checks(false),
            false,
            &[],
        );
        assert_eq!(
            (code, body.as_str()),
            (500, "internal server error: not finished\n")
        );
        assert_eq!(
            render("readyz", Some("nope"), &checks(true), false, &[]).0,
            404
        );
        let excl = vec!["poststarthook/start-service-ip-repair-controllers".to_string()];
        let (code, body) = render("readyz", None, &checks(false), true, &excl);
        assert_eq!(code, 200);
        assert!(
            body.contains("[+]poststarthook/start-service-ip-repair-controllers excluded: ok\n")
        );
    }
}
