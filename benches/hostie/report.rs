//! The results table, printed and written as Markdown.

use crate::load::LoadResult;

pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) target: String,
    pub(crate) p50: String,
    pub(crate) p99: String,
    pub(crate) p999: String,
    pub(crate) throughput: String,
    pub(crate) result: String,
    /// `None`: a figure without a target (floors, and rows compared with another row).
    pub(crate) pass: Option<bool>,
}

pub(crate) fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

impl Row {
    pub(crate) fn latency(
        scenario: &str,
        target: &str,
        r: &LoadResult,
        pass: Option<bool>,
        note: &str,
    ) -> Self {
        Self {
            scenario: scenario.into(),
            target: target.into(),
            p50: us(r.quantile_us(0.5)),
            p99: us(r.quantile_us(0.99)),
            p999: us(r.quantile_us(0.999)),
            throughput: format!("{:.0}/s", r.rate()),
            result: format!(
                "{} req: {} 200, {} 404, {} other, {} slow{note}",
                r.requests, r.ok, r.not_found, r.other, r.slow
            ),
            pass,
        }
    }

    pub(crate) fn figure(scenario: &str, target: &str, result: String, pass: Option<bool>) -> Self {
        Self {
            scenario: scenario.into(),
            target: target.into(),
            p50: "".into(),
            p99: "".into(),
            p999: "".into(),
            throughput: "".into(),
            result,
            pass,
        }
    }
}

pub(crate) fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | target | p50 | p99 | p99.9 | throughput | measured | verdict |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let verdict = match r.pass {
            Some(true) => "met",
            Some(false) => "MISSED",
            // Floors, and figures the issue gives no target (read against a floor or a
            // standalone row of the same run).
            None if r.scenario.starts_with("floor") => "floor",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario, r.target, r.p50, r.p99, r.p999, r.throughput, r.result, verdict
        ));
    }
    out
}
