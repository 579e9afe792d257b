#!/usr/bin/env bash
# Installs what pgward's test suite needs on Debian (bookworm):
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres) for the throwaway
#     test servers started by tests/support/pg.rs,
#   - psql and pgbench, which the tests run as clients,
#   - the `postgres` OS user (the harness runs the server as that user when
#     the tests run as root, because initdb/pg_ctl refuse to run as root),
#   - PgBouncer, which benches/compare.sh (its smoke pass ends scripts/test.sh) compares
#     pgward with,
#   - cargo-nextest (used by scripts/test.sh; it falls back to `cargo test`),
#   - the Python drivers asyncpg and psycopg 3 in a virtualenv at target/pydrivers
#     (git-ignored; tests/drivers.rs runs its scripts with target/pydrivers/bin/python).
#     A virtualenv because Debian's python3 is externally managed (PEP 668): no
#     system-wide pip.
#
# Idempotent: anything already present is left alone, and when everything is
# there it changes nothing. Runs as root; otherwise uses sudo if available.
#
# Debian packaging notes (checked on bookworm with `dpkg -S`):
#   - /usr/bin/psql and /usr/bin/pgbench are only wrappers (pg_wrapper, from
#     postgresql-client-common). The real psql is in postgresql-client-<ver>,
#     but the real pgbench is in the *server* package postgresql-<ver>, so a
#     client-only install leaves a pgbench that fails. The version-neutral
#     `postgresql` metapackage pulls in postgresql-<ver>.
#   - The server binaries live in /usr/lib/postgresql/<ver>/bin, not on PATH;
#     the harness looks there itself.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

log() { printf 'install-deps: %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo env DEBIAN_FRONTEND=noninteractive "$@"; }
else
    as_root() {
        log "need root for: $* (not root, and sudo is not installed)"
        exit 1
    }
fi

have_server() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

# Scans /proc rather than using pgrep: procps is not in minimal images.
postgres_running() { grep -qx postgres /proc/[0-9]*/comm 2>/dev/null; }

# Running --version catches Debian's pg_wrapper being present without the
# binary it dispatches to.
works() { "$1" --version >/dev/null 2>&1; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update
        apt_updated=1
    fi
    log "apt-get install $*"
    as_root apt-get install -y --no-install-recommends "$@"
}

# --- openssl (the TLS tests drive `openssl s_client`) -------------------------
if command -v openssl >/dev/null 2>&1; then
    log "openssl already installed"
else
    apt_install openssl
fi

# --- PostgreSQL -------------------------------------------------------------
if have_server && works psql && works pgbench; then
    log "PostgreSQL server, psql and pgbench already installed"
else
    # Remember whether a cluster was running before, so we only stop what the
    # package installation itself started.
    was_running=0
    if postgres_running; then was_running=1; fi

    apt_install postgresql postgresql-contrib postgresql-client

    # Debian's postinst creates and may start a `main` cluster on port 5432.
    # The tests never use it (each test starts its own server), so free its
    # resources.
    if [ "$was_running" -eq 0 ] && postgres_running; then
        log "stopping the system PostgreSQL service started by the installation"
        as_root service postgresql stop || true
    fi
fi

# --- PgBouncer (benches/compare.sh) -------------------------------------------
if command -v pgbouncer >/dev/null 2>&1; then
    log "PgBouncer already installed"
else
    apt_install pgbouncer
    # The package may start a system PgBouncer on 6432 (the quickstart's pgward port); the
    # benchmark starts its own instances.
    as_root service pgbouncer stop >/dev/null 2>&1 || true
fi

# --- postgres OS user -------------------------------------------------------
if id -u postgres >/dev/null 2>&1; then
    log "OS user postgres exists"
else
    log "creating OS user postgres"
    as_root useradd --system --user-group --home-dir /var/lib/postgresql \
        --shell /bin/bash postgres
fi

# --- cargo-nextest ----------------------------------------------------------
if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found: install Rust (https://rustup.rs) first; skipping cargo-nextest"
elif cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest already installed"
else
    log "installing cargo-nextest (cargo install cargo-nextest --locked); this compiles it and takes a few minutes"
    cargo install cargo-nextest --locked
fi

# --- Python drivers (asyncpg, psycopg 3) for tests/drivers.rs ----------------
# The path must match PYDRIVERS_VENV in tests/drivers.rs. It is under the repository's
# target/ (git-ignored), not under CARGO_TARGET_DIR: the tests find it from
# CARGO_MANIFEST_DIR whatever target dir cargo uses. `cargo clean` removes it; rerun this.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/target/pydrivers"
drivers_importable() {
    "$venv/bin/python" -c 'import asyncpg, psycopg' >/dev/null 2>&1
}
if drivers_importable; then
    log "Python drivers (asyncpg, psycopg) already installed in $venv"
else
    # Debian splits venv's ensurepip into python3-venv; without it `python3 -m venv`
    # fails ("ensurepip is not available").
    # ca-certificates: minimal images lack it, and Debian's pip may use the system CA
    # bundle for PyPI's HTTPS.
    py_pkgs=()
    if ! command -v python3 >/dev/null 2>&1; then
        py_pkgs+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        py_pkgs+=(python3-venv)
    fi
    if [ ! -f /etc/ssl/certs/ca-certificates.crt ]; then
        py_pkgs+=(ca-certificates)
    fi
    if [ "${#py_pkgs[@]}" -gt 0 ]; then
        apt_install "${py_pkgs[@]}"
    fi
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        log "virtualenv $venv exists"
    else
        # --clear: a venv left half-made, or whose interpreter has gone, is rebuilt.
        log "creating virtualenv $venv"
        mkdir -p "$repo_root/target"
        python3 -m venv --clear "$venv"
    fi
    # Lower bounds only. psycopg >= 3.2: the scripts check which way it deallocates
    # (protocol Close with libpq >= 17, which psycopg-binary bundles, or SQL DEALLOCATE).
    log "pip install 'asyncpg>=0.29' 'psycopg[binary]>=3.2' into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        'asyncpg>=0.29' 'psycopg[binary]>=3.2'
    if drivers_importable; then
        log "Python drivers installed"
    else
        log "asyncpg/psycopg still not importable with $venv/bin/python"
        exit 1
    fi
fi

log "done"
