//! `loadgen summary <results.txt>…`: the median and range of every figure over several runs
//! (the files `tests/bench` writes, one JSON line per scenario), as the benchmarks report
//! them.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{Value, json};

/// The fields of a figure worth summarizing (the others describe the run, not the system).
const MEASURES: [&str; 7] = [
    "p50_ms",
    "p99_ms",
    "max_ms",
    "tasks_per_second",
    "seconds",
    "max_kb",
    "ms_per_task",
];

/// A figure's name and the values of each of its measures, one per run.
type Figure = (String, BTreeMap<&'static str, Vec<f64>>);

pub fn print(files: &[String]) -> anyhow::Result<()> {
    if files.is_empty() {
        anyhow::bail!("usage: loadgen summary <results.txt>…");
    }
    // (scenario, position in its results) → figure name and each measure's values, so a
    // name used twice in one scenario stays two figures.
    let mut figures: BTreeMap<(String, usize), Figure> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        for line in text.lines().filter(|line| line.starts_with('{')) {
            let run: Value =
                serde_json::from_str(line).with_context(|| format!("a JSON line of {file}"))?;
            let scenario = run["scenario"].as_str().unwrap_or("?").to_owned();
            for (position, result) in run["results"].as_array().into_iter().flatten().enumerate() {
                let (name, measures) =
                    figures
                        .entry((scenario.clone(), position))
                        .or_insert_with(|| {
                            (
                                result["figure"].as_str().unwrap_or("?").to_owned(),
                                BTreeMap::new(),
                            )
                        });
                if name.as_str() != result["figure"].as_str().unwrap_or("?") {
                    continue;
                }
                for measure in MEASURES {
                    if let Some(value) = result[measure].as_f64() {
                        measures.entry(measure).or_default().push(value);
                    }
                }
            }
        }
    }
    println!(
        "loadgen summary — {} result files: median (min–max)",
        files.len()
    );
    let mut summary = Vec::new();
    for ((scenario, _), (name, measures)) in figures {
        let mut line = format!("{name:<52}");
        let mut fields = serde_json::Map::new();
        for (measure, mut values) in measures {
            values.sort_by(f64::total_cmp);
            let (low, high) = (values[0], values[values.len() - 1]);
            let median = median(&values);
            // CPU per task is a fraction of a millisecond; the rest reads well to a tenth.
            let digits = if measure == "ms_per_task" { 3 } else { 1 };
            line += &format!("  {measure} {median:.digits$} ({low:.digits$}–{high:.digits$})");
            fields.insert(
                measure.to_owned(),
                json!({"median": median, "min": low, "max": high, "runs": values.len()}),
            );
        }
        println!("{line}");
        summary.push(json!({"scenario": scenario, "figure": name, "measures": fields}));
    }
    println!("{}", json!({"summary": summary}));
    Ok(())
}

/// The middle value of sorted `values`, or the mean of the two middle ones.
fn median(values: &[f64]) -> f64 {
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(super::median(&[1.0, 2.0, 4.0]), 2.0);
        assert_eq!(super::median(&[1.0, 2.0, 4.0, 10.0]), 3.0);
    }
}
