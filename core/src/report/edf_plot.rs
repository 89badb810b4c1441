//! `edf_<stage>.svg`: one empirical distribution curve per candidate, legend with n and mean (plotters).

use plotters::prelude::*;

use crate::refine::StageDecision;
use crate::stats::Edf;
use crate::{Error, Result};

/// Renders the stage's EDFs as an SVG document.
pub fn edf_svg(decision: &StageDecision) -> Result<String> {
    let mut svg = String::new();
    draw(decision, &mut svg).map_err(|e| {
        Error::msg(format!(
            "cannot draw the EDF of stage {}: {e}",
            decision.stage
        ))
    })?;
    Ok(svg)
}

fn draw<'a>(
    decision: &StageDecision,
    out: &'a mut String,
) -> std::result::Result<(), Box<dyn std::error::Error + 'a>> {
    let all: Vec<f64> = decision
        .candidates
        .iter()
        .flat_map(|c| c.scores.iter().copied())
        .collect();
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (lo - 0.01, hi + 0.01);
    }
    let pad = 0.02 * (hi - lo);
    let root = SVGBackend::with_string(out, (800, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Stage {}: EDF of design scores", decision.stage),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo - pad)..(hi + pad), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("design score (mean primary score over tasks)")
        .y_desc("fraction of designs ≤ score")
        .draw()?;
    // Curves that coincide must all stay visible, the chosen one above all: the others are drawn first, each wider
    // than the next, and the chosen one last and thinnest, so identical curves show as nested bands of their colours.
    let mut order: Vec<usize> = (0..decision.candidates.len()).collect();
    order.sort_by_key(|&i| decision.candidates[i].chosen);
    let others = order.len().saturating_sub(1) as u32;
    for (rank, &i) in order.iter().enumerate() {
        let c = &decision.candidates[i];
        let edf = Edf::new(&c.scores);
        if edf.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        let mut points = vec![(lo - pad, 0.0)];
        let mut previous = 0.0;
        for (x, y) in edf.steps() {
            points.push((x, previous));
            points.push((x, y));
            previous = y;
        }
        points.push((hi + pad, 1.0));
        let marker = if c.chosen { " (chosen)" } else { "" };
        let label = format!("{}{}: n={}, mean={:.4}", c.candidate, marker, c.n, c.mean);
        let width = if c.chosen {
            2
        } else {
            3 + 2 * (others - (rank as u32).min(others))
        };
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(width)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refine::CandidateStats;

    fn candidate(name: &str, chosen: bool) -> CandidateStats {
        CandidateStats {
            stage: "S1".into(),
            candidate: name.to_string(),
            designs_planned: 3,
            race: None,
            draws: 3,
            rejected: 0,
            n: 3,
            trials_ok: 3,
            trials_diverged: 0,
            trials_failed: 0,
            trials_pruned: 0,
            trials_missing: 0,
            designs_run: 0,
            designs_diverged: 0,
            designs_failed: 0,
            designs_at_chance: 0,
            mean: 0.5,
            median: 0.5,
            std: 0.1,
            ci: None,
            versus_winner: None,
            chosen,
            significant: false,
            reference: f64::NAN,
            designs_learned: None,
            scores: vec![0.4, 0.5, 0.6],
            note: String::new(),
        }
    }

    #[test]
    fn identical_curves_keep_the_chosen_one_on_top() {
        let decision = StageDecision {
            stage: "S1".into(),
            candidates: vec![candidate("chosen-one", true), candidate("twin", false)],
            winner: Some(0),
            tied: true,
            did_not_learn: false,
            race: None,
            outcome: None,
            pairs_tested: 1,
            summary: String::new(),
        };
        let svg = edf_svg(&decision).expect("draws");
        let polylines: Vec<&str> = svg.lines().filter(|l| l.contains("<polyline")).collect();
        // The last curve drawn is the chosen one (thinnest), after its wider identical twin.
        let widths: Vec<&str> = polylines
            .iter()
            .filter_map(|l| l.split("stroke-width=\"").nth(1))
            .filter_map(|w| w.split('"').next())
            .collect();
        assert!(widths.len() >= 2, "{svg}");
        let curve_widths = &widths[widths.len() - 2..];
        assert_eq!(curve_widths, ["5", "2"], "{widths:?}");
    }
}
