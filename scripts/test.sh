#!/usr/bin/env bash
# The project's full check, as run by CI (.ci/run) and documented in the
# README: formatting, lints, all tests, doctests, that benchmarks build, and a smoke pass
# of the comparison benchmark (benches/compare.sh --smoke).
# Installs its dependencies first (scripts/install-deps.sh: PostgreSQL binaries for the
# integration tests, cargo-nextest).

set -euo pipefail

cd "$(dirname "$0")/.."

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi

section() { printf '\n===== %s =====\n' "$*"; }

# Idempotent and quick when everything is there: the README's one test command must work on
# a fresh Debian machine too.
section "dependencies"
bash scripts/install-deps.sh

section "cargo fmt --all -- --check"
cargo fmt --all -- --check

section "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
    section "cargo nextest run --workspace --no-fail-fast"
    cargo nextest run --workspace --no-fail-fast
else
    section "cargo test --workspace --no-fail-fast (cargo-nextest not installed)"
    cargo test --workspace --no-fail-fast
fi

# nextest does not run doctests.
section "cargo test --doc"
cargo test --doc

section "cargo bench --no-run"
cargo bench --no-run

# Every target (PostgreSQL direct, PgBouncer, pgward and its policy/audit/no-reset variants) in
# every scenario of the comparison, 2 s each; fails if direct or pgward fails one.
section "bash benches/compare.sh --smoke"
bash benches/compare.sh --smoke

section "all checks passed"
