//! The fuzz targets' entry points (`palisade::fuzzing`, feature `fuzzing`) run on the
//! seed corpus without a fuzzer, so the suite exercises them on stable: every committed
//! seed file and every generated seed through every entry point (an entry point panics
//! on a broken invariant).
//!
//! The seed files are written by the real encoders:
//! `cargo test --features fuzzing --test fuzz_entry_points -- --ignored write_seed_corpus`
//! (sealed seeds carry random nonces, so rewriting changes their bytes, not what they
//! reach).
#![cfg(feature = "fuzzing")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use palisade::fuzzing::{seed_corpus, TARGETS};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// The committed seed files of one target.
fn seed_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_seed_passes_every_entry_point() {
    let mut runs = 0;
    for (target, _) in TARGETS {
        let files = seed_files(target);
        assert!(!files.is_empty(), "no seed files for {target}");
        for file in files {
            let bytes = std::fs::read(&file).expect("a seed file");
            for (name, entry) in TARGETS {
                let outcome = std::panic::catch_unwind(|| entry(&bytes));
                assert!(outcome.is_ok(), "{name} panicked on {}", file.display());
                runs += 1;
            }
        }
    }
    assert!(runs >= TARGETS.len() * TARGETS.len());
}

#[test]
fn every_generated_seed_passes_every_entry_point() {
    let seeds = seed_corpus();
    let targets: BTreeSet<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let seeded: BTreeSet<&str> = seeds.iter().map(|s| s.target).collect();
    assert_eq!(
        seeded, targets,
        "every target has generated seeds, and only targets do"
    );
    for seed in &seeds {
        for (name, entry) in TARGETS {
            let outcome = std::panic::catch_unwind(|| entry(&seed.bytes));
            assert!(
                outcome.is_ok(),
                "{name} panicked on {}/{}",
                seed.target,
                seed.name
            );
        }
    }
}

#[test]
fn the_committed_seeds_are_the_generated_ones() {
    // Sealed seeds differ in their nonces, so compare the names: a seed added to the
    // generator must be written out (and a stale file removed).
    let generated: BTreeSet<(String, String)> = seed_corpus()
        .into_iter()
        .map(|s| (s.target.to_owned(), s.name))
        .collect();
    let committed: BTreeSet<(String, String)> = TARGETS
        .iter()
        .flat_map(|(target, _)| {
            seed_files(target).into_iter().map(move |p| {
                let name = p.file_name().and_then(|n| n.to_str()).expect("a file name");
                (target.to_string(), name.to_owned())
            })
        })
        .collect();
    assert_eq!(
        committed, generated,
        "run write_seed_corpus (see the module docs)"
    );
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand after changing the seed generator"]
fn write_seed_corpus() {
    for (target, _) in TARGETS {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).expect("the corpus directory");
        for old in seed_files(target) {
            std::fs::remove_file(old).expect("an old seed removed");
        }
    }
    for seed in seed_corpus() {
        let path = corpus_dir().join(seed.target).join(&seed.name);
        std::fs::write(&path, &seed.bytes).expect("a seed written");
    }
}
