//! A CEL predicate over a few named JSON values, outside any workflow: a trust policy's `when`
//! over a token's `claims`. Compiled once by the config loader (unknown names are refused with
//! their place), run on each token; arithmetic and numbers behave as in rules.

use std::collections::BTreeSet;
use std::sync::Arc;

use cel::{IdedExpr, Value};

use super::check::walk;
use super::number::{from_json, route_arithmetic};
use super::{CompileProblem, context, parse, truth, unknown_names};

#[derive(Debug, Clone)]
pub struct Predicate {
    pub when: String,
    expr: Arc<IdedExpr>,
    names: &'static [&'static str],
}

impl Predicate {
    /// Parses `when` and checks that it uses only `names` (and CEL's own).
    pub fn compile(
        when: &str,
        names: &'static [&'static str],
    ) -> Result<Self, Vec<CompileProblem>> {
        let program = parse(when)?;
        let mut free = Vec::new();
        walk(
            program.expression(),
            &mut Vec::new(),
            &mut free,
            &mut BTreeSet::new(),
        );
        let problems = unknown_names(&program, free, names, "this expression");
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut expr = program.expression().clone();
        route_arithmetic(&mut expr);
        Ok(Self {
            when: when.to_owned(),
            expr: Arc::new(expr),
            names,
        })
    }

    /// Runs it with `vars` (each of its names, as JSON): `Ok(true)` when it holds; an error
    /// (a missing field, a wrong type) says why it could not be decided.
    pub fn holds(&self, vars: &[(&str, &serde_json::Value)]) -> Result<bool, String> {
        let mut ctx = context()?;
        for name in self.names {
            let value = vars
                .iter()
                .find(|(n, _)| n == name)
                .map_or(Value::Null, |(_, v)| from_json(v));
            ctx.add_variable_from_value(*name, value);
        }
        truth(&self.expr, &ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIMS: &[&str] = &["claims"];

    #[test]
    fn a_predicate_over_claims_holds_refuses_unknown_names_and_reports_failures() {
        let p = Predicate::compile(
            r#"claims.repository_owner_id == "1234" && claims.ref.startsWith("refs/tags/")"#,
            CLAIMS,
        )
        .unwrap();
        let ok = serde_json::json!({"repository_owner_id": "1234", "ref": "refs/tags/v1.2"});
        let branch = serde_json::json!({"repository_owner_id": "1234", "ref": "refs/heads/main"});
        assert_eq!(p.holds(&[("claims", &ok)]), Ok(true));
        assert_eq!(p.holds(&[("claims", &branch)]), Ok(false));
        let missing = serde_json::json!({"repository_owner_id": "1234"});
        assert!(p.holds(&[("claims", &missing)]).is_err());
        let problems = Predicate::compile("params.x == 1", CLAIMS).unwrap_err();
        assert!(
            problems[0].message.contains("unknown name `params`"),
            "{problems:?}"
        );
        assert!(
            Predicate::compile("claims.run_attempt + 1 > 2", CLAIMS)
                .unwrap()
                .holds(&[("claims", &serde_json::json!({"run_attempt": 2}))])
                .unwrap()
        );
        assert!(Predicate::compile("claims ==", CLAIMS).is_err());
    }
}
