//! Latency of one short run, every variant interleaved round-robin within each iteration so that
//! machine noise lands on all of them alike.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::baseline::{self, Baselines};
use crate::kiln::Kiln;
use crate::stats::Samples;

pub const TRUE: &[&str] = &["/bin/true"];
pub const PYTHON: &[&str] = &["/usr/bin/python3", "-c", "pass"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Bare,
    Bwrap,
    Unshare,
    KilnCold,
    KilnWarm,
    PythonBare,
    PythonKiln,
}

impl Case {
    pub const ALL: [Case; 7] = [
        Case::Bare,
        Case::Bwrap,
        Case::Unshare,
        Case::KilnCold,
        Case::KilnWarm,
        Case::PythonBare,
        Case::PythonKiln,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Case::Bare => "bare fork+exec /bin/true",
            Case::Bwrap => "bwrap --unshare-all /bin/true",
            Case::Unshare => "unshare -Upfmni /bin/true",
            Case::KilnCold => "kiln cold /bin/true",
            Case::KilnWarm => "kiln warm /bin/true",
            Case::PythonBare => "python3 -c pass, bare",
            Case::PythonKiln => "python3 -c pass, kiln warm",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Case::Bare => "bare",
            Case::Bwrap => "bwrap",
            Case::Unshare => "unshare",
            Case::KilnCold => "kiln_cold",
            Case::KilnWarm => "kiln_warm",
            Case::PythonBare => "python_bare",
            Case::PythonKiln => "python_kiln_warm",
        }
    }
}

/// Everything the latency phase measured.
#[derive(Debug, Default)]
pub struct Latency {
    samples: Vec<(Case, Samples)>,
    /// A cold run split into its steps.
    pub cold_create: Samples,
    pub cold_run: Samples,
    pub cold_destroy: Samples,
    /// A warm /bin/true run split into taking the sandbox and running in it.
    pub warm_take: Samples,
    pub warm_run: Samples,
    /// Warm takes (of /bin/true and python runs) that were served from the pool, and all takes.
    pub warm_hits: usize,
    pub warm_takes: usize,
}

impl Latency {
    /// The samples of `case`, or `None` if it was skipped.
    pub fn get(&self, case: Case) -> Option<&Samples> {
        self.samples
            .iter()
            .find(|(c, _)| *c == case)
            .map(|(_, s)| s)
    }

    pub fn cases(&self) -> impl Iterator<Item = (Case, &Samples)> {
        self.samples.iter().map(|(c, s)| (*c, s))
    }

    fn slot(&mut self, case: Case) -> &mut Samples {
        let i = self
            .samples
            .iter()
            .position(|(c, _)| *c == case)
            .expect("case is enabled");
        &mut self.samples[i].1
    }
}

/// Runs `iterations` rounds; each round runs every enabled case once, starting at a different case
/// each time so that no case always follows the same one.
pub async fn measure(kiln: &mut Kiln, tools: &Baselines, iterations: usize) -> Result<Latency> {
    let enabled: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|c| match c {
            Case::Bwrap => tools.bwrap.is_some(),
            Case::Unshare => tools.unshare.is_some(),
            _ => true,
        })
        .collect();
    let mut out = Latency {
        samples: enabled.iter().map(|c| (*c, Samples::default())).collect(),
        ..Latency::default()
    };
    let mut reported = Vec::new();
    let step = (iterations / 10).max(1);
    for i in 0..iterations {
        if i % step == 0 {
            eprintln!("latency: iteration {i}/{iterations}");
        }
        for k in 0..enabled.len() {
            let case = enabled[(i + k) % enabled.len()];
            // Background destroys and pool refills from the previous case must not overlap this one.
            kiln.settle().await?;
            match one(kiln, tools, case, &mut out).await {
                Ok(d) => out.slot(case).push(d),
                Err(e) => {
                    out.slot(case).failures += 1;
                    if !reported.contains(&case) {
                        eprintln!("{}: failed: {e:#}", case.label());
                        reported.push(case);
                    }
                }
            }
        }
    }
    kiln.settle().await?;
    Ok(out)
}

async fn one(
    kiln: &mut Kiln,
    tools: &Baselines,
    case: Case,
    out: &mut Latency,
) -> Result<Duration> {
    let host = |prefix: &[String], argv: &[&str]| {
        // A blocking spawn+wait, like a plain server would do it; block_in_place keeps the
        // runtime's other tasks (the pool's) free to run on the other workers.
        tokio::task::block_in_place(|| {
            let t = Instant::now();
            baseline::run(prefix, argv)?;
            Ok(t.elapsed())
        })
    };
    match case {
        Case::Bare => host(&[], TRUE),
        Case::Bwrap => host(tools.bwrap.as_deref().unwrap_or_default(), TRUE),
        Case::Unshare => host(tools.unshare.as_deref().unwrap_or_default(), TRUE),
        Case::PythonBare => host(&[], PYTHON),
        Case::KilnCold => {
            let t = kiln.cold(TRUE).await?;
            out.cold_create.push(t.create);
            out.cold_run.push(t.run);
            out.cold_destroy.push(t.destroy);
            Ok(t.total())
        }
        Case::KilnWarm | Case::PythonKiln => {
            let argv = if case == Case::KilnWarm { TRUE } else { PYTHON };
            let t = kiln.warm(argv).await?;
            out.warm_takes += 1;
            out.warm_hits += usize::from(t.from_pool);
            if case == Case::KilnWarm {
                out.warm_take.push(t.take);
                out.warm_run.push(t.run);
            }
            Ok(t.take + t.run)
        }
    }
}
