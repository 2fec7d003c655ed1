"""ARP prober at scale against tuned arp-scan, on the same test wire.

Builds the test wire of ``tests/wire.py`` (a bridge, a client and 3 node namespaces; root
needed), makes a responder in every node namespace answer for the same 1,000 IPs, so every IP
gets three replies (three MACs: a conflict each), and times whole processes run in the client
namespace, side by side:

- ``python -m migrate.verify.arp --interface eth0 --ip RANGE`` (our prober, default settings,
  then with ``--quiet 0.01``: it stops 10 ms after the last new MAC instead of 20 ms),
- ``python -m migrate verify --arp --interface eth0 --ip RANGE -o json`` from this checkout
  (its start-up pays for this machine's editable install and other ``.pth`` files),
- ``migrate verify --arp ...`` installed by pip in a venv of its own, as users run it, with
  ``-o json`` and with the default table,
- ``arp-scan -I eth0 -B 100M -r 1 -t 100 RANGE`` (tuned), when installed.

It prints the median and best wall time of each over the runs, the replies each counted (the
goal is every one of the 3,000), and our median over arp-scan's (goal: at most 1.5 for the
installed ``migrate verify --arp``). Everything is torn down at the end, also on failure or
Ctrl-C.

Usage: ``sudo python benchmarks/arp_scale.py [--ips 1000] [--runs 7] [--nodes 3]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.wire import INTERFACE, Responder, Wire, python_env, vips, why_no_wire

Counter = Callable[[subprocess.CompletedProcess[str]], int]
OURS = "python -m migrate.verify.arp"
OURS_TUNED = "python -m migrate.verify.arp --quiet 0.01"
ARP_SCAN = "arp-scan -B 100M -r 1 -t 100"
INSTALLED_JSON = "migrate verify --arp -o json (installed)"
INSTALLED_TABLE = "migrate verify --arp (installed, table)"


def count_ours(done: subprocess.CompletedProcess[str]) -> int:
    """Replies our prober recorded: the MACs of every IP summed."""
    return sum(len(entry["macs"]) for entry in json.loads(done.stdout)["arp"])


def count_table(done: subprocess.CompletedProcess[str]) -> int:
    """Replies in the table: the comma-separated MACs of every IP row summed."""
    rows = done.stdout.splitlines()[2:-1]  # title, header ... count
    return sum(len(row.split()[2].split(",")) for row in rows if row.split()[2] != "-")


def count_arp_scan(done: subprocess.CompletedProcess[str]) -> int:
    """Replies arp-scan printed (one line each, duplicates included, with -x -q)."""
    return sum(1 for line in done.stdout.splitlines() if line.strip())


def timed(argv: Sequence[str], count: Counter) -> tuple[float, int]:
    """Whole-process wall time of ``argv`` and the replies it counted."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=python_env(), check=False)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 4):
        raise SystemExit(f"{argv[4:]} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, count(done)


def installed_cli(folder: Path) -> str | None:
    """The `migrate` command of a regular install, as pipx or a venv gives users: installed
    by pip from this checkout, bytecode compiled, in a venv of its own, so that no ``.pth``
    file of this machine (an editable-install finder, a sandbox's certificates) runs at
    start-up. Its dependencies are found through a plain path entry to this interpreter's
    site-packages (put on sys.path, its .pth files not run), which needs no network."""
    import site

    venv = folder / "venv"
    repo = Path(__file__).resolve().parents[1]
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)],
                       check=True, capture_output=True, timeout=300)
        packages = next((venv / "lib").glob("python*/site-packages"))
        (packages / "zz_dependencies.pth").write_text(
            "\n".join(site.getsitepackages()) + "\n")
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", str(repo)],
                       check=True, capture_output=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, StopIteration) as error:
        print(f"could not install the package in a venv ({error}); measuring the checkout only")
        return None
    return str(venv / "bin" / "migrate")


def main() -> int:
    """Build, measure, print, tear down."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ips", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--nodes", type=int, default=3)
    options = parser.parse_args()
    reason = why_no_wire()
    if reason:
        print(f"skipped: {reason}")
        return 0
    # Measure the tool as an installed package runs it: with its bytecode compiled (pip does
    # that at install; an editable checkout under PYTHONDONTWRITEBYTECODE would not).
    import compileall

    import migrate

    compileall.compile_dir(str(Path(migrate.__file__).parent), quiet=1)
    targets = vips(options.ips)
    spec = f"{targets[0]}-{targets[-1]}"
    expected = options.ips * options.nodes
    wire = Wire(nodes=options.nodes)
    responders: list[Responder] = []
    try:
        wire.build()
        folder = Path(tempfile.mkdtemp(prefix="arp_scale."))
        for node in wire.nodes:
            responder = wire.responder(node, folder / f"{node}.ips")
            responder.set_ips(targets)
            responders.append(responder)
        time.sleep(0.5)  # let the gratuitous ARP of the start pass

        contenders: dict[str, tuple[list[str], Counter]] = {
            OURS: (wire.prober_argv([f"--ip={spec}"]), count_ours),
            OURS_TUNED: (wire.prober_argv([f"--ip={spec}", "--quiet", "0.01"]), count_ours),
        }
        verify = ["verify", "--arp", "--interface", INTERFACE, "--ip", spec]
        contenders["python -m migrate verify --arp -o json (checkout)"] = (
            wire.exec_argv(wire.client, [sys.executable, "-m", "migrate", *verify, "-o", "json"]),
            count_ours,
        )
        installed = installed_cli(folder)
        if installed:
            contenders[INSTALLED_JSON] = (
                wire.exec_argv(wire.client, [installed, *verify, "-o", "json"]), count_ours)
            contenders[INSTALLED_TABLE] = (
                wire.exec_argv(wire.client, [installed, *verify]), count_table)
        if shutil.which("arp-scan"):
            contenders[ARP_SCAN] = (
                wire.exec_argv(wire.client, [
                    "arp-scan", "-I", INTERFACE, "-B", "100M", "-r", "1", "-t", "100",
                    "-x", "-q", spec,
                ]),
                count_arp_scan,
            )
        else:
            print("arp-scan not installed: measuring our prober alone")

        times: dict[str, list[float]] = {name: [] for name in contenders}
        counts: dict[str, list[int]] = {name: [] for name in contenders}
        for _ in range(options.runs):
            for name, (argv, count) in contenders.items():  # interleaved: same conditions
                elapsed, replies = timed(argv, count)
                times[name].append(elapsed)
                counts[name].append(replies)

        print(f"{options.ips} IPs x {options.nodes} responders = {expected} replies expected, "
              f"{options.runs} runs each, whole-process wall time (ip netns exec included)")
        theirs = statistics.median(times[ARP_SCAN]) if ARP_SCAN in times else None
        print(f"{'command':52} {'median s':>9} {'best s':>8} {'replies min/max':>16} "
              f"{'/arp-scan':>9}")
        for name in contenders:
            median = statistics.median(times[name])
            ratio = f"{median / theirs:9.2f}" if theirs else ""
            print(f"{name:52} {median:9.3f} {min(times[name]):8.3f} "
                  f"{min(counts[name]):>7}/{max(counts[name]):<8} {ratio}")
        print("goal: migrate verify --arp (installed) <= 1.5 x arp-scan (medians), no reply lost")
        print("(arp-scan exits once every IP answered once: its quick runs are those that read"
              " fewer duplicates; we wait 20 ms after the last new MAC for a second announcer)")
        lost = {name: expected - min(counts[name]) for name in contenders if name != ARP_SCAN}
        for name, missing in lost.items():
            print(f"replies lost by {name} (worst run): {missing}")
        return 0 if not any(lost.values()) else 1
    finally:
        for responder in responders:
            responder.stop()
        wire.destroy()


if __name__ == "__main__":
    sys.exit(main())
