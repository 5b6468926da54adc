//! Benchmark figures as SVG: delivered per second over time against the rate's bound, and a
//! latency distribution. The README shows the latest run's plots beside the printed figures.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// Per-second rates from cumulative samples `(seconds, count)`, one point per `window` seconds.
pub fn rates(samples: &[(f64, f64)], window: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut last = match samples.first() {
        Some(s) => *s,
        None => return out,
    };
    for &(t, n) in samples {
        if t - last.0 >= window {
            out.push((t, (n - last.1) / (t - last.0)));
            last = (t, n);
        }
    }
    out
}

/// Where the benchmarks write their plots (`target/bench`).
pub fn bench_dir() -> PathBuf {
    crate::moto::repo_root().join("target").join("bench")
}

/// Delivered per second over time (`series`) against the `bound`, as an SVG file; `axes` names
/// the x and y axes.
pub fn throughput(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    series: &[(f64, f64)],
    bound: f64,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let x_max = series.last().map_or(1.0, |p| p.0).max(1.0);
    let y_max = series.iter().map(|p| p.1).fold(bound, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new(
            series.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label("delivered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(
            [(0.0, bound), (x_max, bound)],
            RED.stroke_width(2),
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label("bound at the rate limit")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// A histogram of `seconds` (latencies) in `buckets` equal bins, as an SVG file.
pub fn latency(path: &Path, title: &str, seconds: &[f64], buckets: usize) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let max = seconds.iter().copied().fold(0.0, f64::max).max(0.001);
    let width = max / buckets.max(1) as f64;
    let mut counts = vec![0u32; buckets.max(1)];
    for s in seconds {
        let i = ((s / width) as usize).min(counts.len() - 1);
        counts[i] += 1;
    }
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let y_max = counts.iter().copied().max().unwrap_or(1) as f64 * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max * 1.02, 0.0..y_max)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("count")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, c)| {
            let x0 = i as f64 * width;
            Rectangle::new(
                [(x0, 0.0), (x0 + width, f64::from(*c))],
                BLUE.mix(0.6).filled(),
            )
        }))
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_over_each_window() {
        let samples = [
            (0.0, 0.0),
            (0.5, 0.0),
            (1.0, 100.0),
            (2.0, 300.0),
            (2.5, 300.0),
        ];
        assert_eq!(rates(&samples, 1.0), [(1.0, 100.0), (2.0, 200.0)]);
        assert!(rates(&[], 1.0).is_empty());
    }

    #[test]
    fn plots_are_svg_files() {
        let dir = std::env::temp_dir().join(format!("plot-test-{}", std::process::id()));
        let t = dir.join("t.svg");
        throughput(
            &t,
            "test",
            ("s", "per s"),
            &[(1.0, 10.0), (2.0, 12.0)],
            11.0,
        )
        .unwrap();
        let l = dir.join("l.svg");
        latency(&l, "test", &[0.5, 1.0, 1.5, 9.0], 10).unwrap();
        for p in [t, l] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.starts_with("<svg"), "{}", &text[..40.min(text.len())]);
            assert!(text.contains("<polyline") || text.contains("<rect"));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
