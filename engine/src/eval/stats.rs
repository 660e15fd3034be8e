//! Welch's unequal-variance t-test and the confidence interval of a difference of means: what
//! an ablation's headline reports. Seeds give a handful of accuracies per row with different
//! spreads (a distilled student is often steadier than its baseline), so the pooled-variance
//! t-test would be wrong and "twice the std" is not a test at all. Everything here needs only
//! each row's mean, sample standard deviation and count, so a table rendered again from its JSON
//! gives the same p-value.
//!
//! The Student t distribution is evaluated through the regularised incomplete beta function
//! (continued fraction, modified Lentz), and its quantiles by bisection on that CDF: slower than
//! a closed-form approximation, but exact to ~1e-10 and with no table to get wrong.

use serde::{Deserialize, Serialize};

/// Welch's t-test of `a - b` from each sample's mean, sample std and size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Welch {
    /// `mean_a - mean_b`.
    pub delta: f64,
    /// Standard error of `delta`.
    pub se: f64,
    /// Welch-Satterthwaite degrees of freedom.
    pub df: f64,
    /// `delta / se`.
    pub t: f64,
    /// Two-sided p-value of "the means are equal".
    pub p: f64,
    /// 95% confidence interval of `delta`.
    pub ci95: (f64, f64),
}

impl Welch {
    /// `None` when a sample has fewer than two values (no variance estimate). When both spreads
    /// are zero the difference is exact: `p` is 0 for a non-zero difference and 1 for none.
    pub fn test(
        mean_a: f64,
        std_a: f64,
        n_a: usize,
        mean_b: f64,
        std_b: f64,
        n_b: usize,
    ) -> Option<Self> {
        if n_a < 2 || n_b < 2 {
            return None;
        }
        let (va, vb) = (std_a * std_a / n_a as f64, std_b * std_b / n_b as f64);
        let delta = mean_a - mean_b;
        let se = (va + vb).sqrt();
        if se == 0.0 {
            let p = if delta == 0.0 { 1.0 } else { 0.0 };
            return Some(Welch {
                delta,
                se,
                df: f64::INFINITY,
                t: f64::INFINITY.copysign(delta),
                p,
                ci95: (delta, delta),
            });
        }
        let df = (va + vb).powi(2) / (va * va / (n_a - 1) as f64 + vb * vb / (n_b - 1) as f64);
        let t = delta / se;
        let p = 2.0 * student_t_sf(t.abs(), df);
        let q = student_t_quantile(0.975, df);
        Some(Welch {
            delta,
            se,
            df,
            t,
            p,
            ci95: (delta - q * se, delta + q * se),
        })
    }
}

/// `P(T > t)` for Student's t with `df` degrees of freedom, `t >= 0`.
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    debug_assert!(t >= 0.0 && df > 0.0);
    if !t.is_finite() {
        return 0.0;
    }
    let x = df / (df + t * t);
    0.5 * incomplete_beta(df / 2.0, 0.5, x)
}

/// The `q` quantile (0 < q < 1) of Student's t with `df` degrees of freedom.
pub fn student_t_quantile(q: f64, df: f64) -> f64 {
    assert!(q > 0.0 && q < 1.0, "quantile {q} outside (0, 1)");
    if q < 0.5 {
        return -student_t_quantile(1.0 - q, df);
    }
    let target = 1.0 - q; // upper tail
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while student_t_sf(hi, df) > target {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_sf(mid, df) > target {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 * hi.max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// The regularised incomplete beta function `I_x(a, b)`.
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // the continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry
    // I_x(a, b) = 1 - I_{1-x}(b, a) on the other side
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..500 {
        let m = m as f64;
        // even step
        let num = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + num / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        // odd step
        let num = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + num / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut s = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        s += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_distribution_matches_published_values() {
        // two-sided 95% critical values of Student's t (any statistics table)
        for (df, q) in [
            (1.0, 12.7062),
            (2.0, 4.3027),
            (4.0, 2.7764),
            (8.0, 2.3060),
            (30.0, 2.0423),
        ] {
            let got = student_t_quantile(0.975, df);
            assert!(close(got, q, 1e-4), "df {df}: {got} vs {q}");
        }
        // df = 1 is the Cauchy distribution: P(T > t) = 1/2 - atan(t)/pi
        for t in [0.3f64, 1.0, 4.0] {
            let want = 0.5 - f64::atan(t) / std::f64::consts::PI;
            assert!(close(student_t_sf(t, 1.0), want, 1e-12));
        }
        // df = 2 has a closed form too: P(T > t) = 1/2 (1 - t / sqrt(t^2 + 2))
        for t in [0.5f64, 2.0, 9.0] {
            let want = 0.5 * (1.0 - t / (t * t + 2.0).sqrt());
            assert!(close(student_t_sf(t, 2.0), want, 1e-12));
        }
        assert!(close(student_t_sf(0.0, 7.0), 0.5, 1e-12));
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-12
        ));
    }

    #[test]
    fn welch_matches_a_hand_computation() {
        // a: 60, 61, 59 (mean 60, std 1); b: 50, 52, 48 (mean 50, std 2)
        let w = Welch::test(60.0, 1.0, 3, 50.0, 2.0, 3).unwrap();
        let se = (1.0f64 / 3.0 + 4.0 / 3.0).sqrt();
        assert!(close(w.se, se, 1e-12));
        // df = (1/3 + 4/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = (25/9) / (17/18) = 50/17
        assert!(close(w.df, 50.0 / 17.0, 1e-12));
        assert!(close(w.t, 10.0 / se, 1e-12));
        // the interval is symmetric around the difference, with the df's own t quantile
        let q = student_t_quantile(0.975, 50.0 / 17.0);
        assert!(close(w.ci95.0, 10.0 - q * se, 1e-9) && close(w.ci95.1, 10.0 + q * se, 1e-9));
        // p from the same distribution: P(|T| > t) = 2 sf(t)
        assert!(close(w.p, 2.0 * student_t_sf(w.t, w.df), 1e-15));
        assert!(w.p < 0.01 && w.p > 0.001, "{}", w.p);
        // equal means: p = 1; a single seed: no test
        assert!(close(
            Welch::test(5.0, 1.0, 4, 5.0, 3.0, 5).unwrap().p,
            1.0,
            1e-12
        ));
        assert!(Welch::test(5.0, 1.0, 1, 4.0, 1.0, 5).is_none());
        // no spread at all: the difference is exact
        let exact = Welch::test(5.0, 0.0, 3, 4.0, 0.0, 3).unwrap();
        assert_eq!(exact.p, 0.0);
    }
}
