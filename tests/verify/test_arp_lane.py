"""The lean lane of ``migrate`` (``migrate.entry``) for ``verify --arp --ip``: it answers
exactly what the click CLI answers, and everything else goes to the click CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any

import pytest

from migrate import entry
from migrate.verify import arp
from migrate.verify.arp import ArpResult, classify
from tests.helpers import run_cli

MAC_N1, MAC_N2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
ANSWERS = {"192.0.2.1": (MAC_N1,), "192.0.2.2": (MAC_N1, MAC_N2)}


def fake_probe(interface: str, ips: Sequence[IPv4Address], **_: Any) -> list[ArpResult]:
    """The wire replaced by ANSWERS (192.0.2.1 ok, .2 a conflict, any other IP silent)."""
    if interface == "broken":
        raise RuntimeError("a bug in the prober")
    if interface == "interrupted":
        raise KeyboardInterrupt
    return [ArpResult(ip, classify(ANSWERS.get(str(ip), ())), ANSWERS.get(str(ip), ()))
            for ip in ips]


@pytest.fixture(autouse=True)
def wire_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arp, "probe", fake_probe)


def run_lane(capsys: pytest.CaptureFixture[str], args: Sequence[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``migrate ARGS`` through migrate.entry."""
    assert entry.parse_arp_check(args) is not None, "the lane should take these arguments"
    code = entry.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SAME_AS_CLICK = {
    "all ok, json": ["--ip", "192.0.2.1", "-o", "json"],
    "conflict and silent, json": ["--ip", "192.0.2.1-192.0.2.3", "--output=json"],
    "table (the default)": ["--ip", "192.0.2.1", "--ip", "192.0.2.2,192.0.2.9"],
    "table with node MACs": ["--ip=192.0.2.0/30", f"--node-mac=n1={MAC_N1}", "-o", "table"],
    "node MACs, json": ["--ip", "192.0.2.2", "--node-mac", f"n2={MAC_N2}", "-ojson"],
    "reversed range": ["--ip", "192.0.2.9-192.0.2.1"],
    "IPv6": ["--ip", "2001:db8::1", "-o", "json"],
    "malformed node MAC": ["--ip", "192.0.2.1", "--node-mac", "n1=zz"],
    "node MAC without node": ["--ip", "192.0.2.1", "--node-mac", f"={MAC_N1}"],
}


@pytest.mark.parametrize("args", SAME_AS_CLICK.values(), ids=SAME_AS_CLICK.keys())
def test_the_lane_prints_and_exits_as_the_click_cli(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    argv = ["verify", "--arp", "--interface", "eth1", *args]
    lane = run_lane(capsys, argv)
    click = run_cli(*argv)
    assert lane == (click.exit_code, click.stdout, click.stderr)
    assert lane[0] in (0, 1, 4) and (lane[1] or lane[2])


@pytest.mark.parametrize("interface", ["broken", "interrupted"])
def test_a_bug_or_ctrl_c_is_reported_as_the_click_cli_does(
    capsys: pytest.CaptureFixture[str], interface: str
) -> None:
    argv = ["verify", "--arp", "--interface", interface, "--ip", "192.0.2.1"]
    lane = run_lane(capsys, argv)
    click = run_cli(*argv)
    assert lane == (click.exit_code, click.stdout, click.stderr)
    assert lane[0] == 1
    assert ("internal error (RuntimeError: a bug in the prober)" in lane[2]
            if interface == "broken" else "Aborted!" in lane[2])


def test_the_lane_reads_options_in_any_order_and_form() -> None:
    check = entry.parse_arp_check([
        "verify", "--ip", "192.0.2.1", "-ojson", "--interface=eth1", "--node-mac",
        f"n1={MAC_N1}", "--ip=192.0.2.2", "--arp",
    ])
    assert check is not None
    assert (check.interface, check.ip_specs, check.node_macs, check.output) == (
        "eth1", ("192.0.2.1", "192.0.2.2"), (f"n1={MAC_N1}",), "json")


LEFT_TO_CLICK = {
    "help": ["verify", "--help"],
    "short help": ["verify", "-h", "--arp", "--interface", "eth1", "--ip", "192.0.2.1"],
    "global option first": ["--debug", "verify", "--arp", "--interface", "eth1", "--ip", "1.2.3.4"],
    "another command": ["plan", "--arp", "--interface", "eth1", "--ip", "192.0.2.1"],
    "no --arp": ["verify", "--interface", "eth1", "--ip", "192.0.2.1"],
    "no --interface": ["verify", "--arp", "--ip", "192.0.2.1"],
    "no --ip": ["verify", "--arp", "--interface", "eth1"],
    "a plan": ["verify", "--arp", "--interface", "eth1", "--plan", "p.json"],
    "a cluster option": ["verify", "--arp", "--interface", "eth1", "--ip", "192.0.2.1",
                         "--kubeconfig", "k"],
    "unknown output": ["verify", "--arp", "--interface", "eth1", "--ip", "192.0.2.1", "-o", "yaml"],
    "output in capitals": ["verify", "--arp", "--interface", "eth1", "--ip", "192.0.2.1",
                           "-o", "JSON"],
    "short option with =": ["verify", "--arp", "--interface", "eth1", "--ip", "192.0.2.1",
                            "-o=json"],
    "interface twice": ["verify", "--arp", "--interface", "eth1", "--interface", "eth2",
                        "--ip", "192.0.2.1"],
    "value like an option": ["verify", "--arp", "--interface", "--ip", "192.0.2.1"],
    "value missing": ["verify", "--arp", "--ip", "192.0.2.1", "--interface"],
    "empty value": ["verify", "--arp", "--interface=", "--ip", "192.0.2.1"],
    "flag with a value": ["verify", "--arp=yes", "--interface", "eth1", "--ip", "192.0.2.1"],
    "positional": ["verify", "--arp", "--interface", "eth1", "--ip", "192.0.2.1", "extra"],
    "end of options": ["verify", "--arp", "--interface", "eth1", "--", "--ip", "192.0.2.1"],
}


@pytest.mark.parametrize("args", LEFT_TO_CLICK.values(), ids=LEFT_TO_CLICK.keys())
def test_anything_else_goes_to_the_click_cli(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert entry.parse_arp_check(args) is None
    click = run_cli(*args)
    with pytest.raises(SystemExit) as exited:
        entry.main(args)
    captured = capsys.readouterr()
    # Same words; the line breaks of help follow the terminal's width, which differs here.
    assert (exited.value.code or 0, captured.out.split(), captured.err.split()) == (
        click.exit_code, click.stdout.split(), click.stderr.split())


def test_the_lane_imports_neither_click_nor_rich_nor_the_cluster_client() -> None:
    code = (
        "import sys\n"
        "from migrate.verify import arp\n"
        "from migrate.verify.arp import ArpResult\n"
        "arp.probe = lambda interface, ips, **_: [ArpResult(ip, 'ok', ('02:00:00:00:00:01',))"
        " for ip in ips]\n"
        "from migrate.entry import main\n"
        "codes = [main(['verify', '--arp', '--interface', 'eth1', '--ip', '192.0.2.1'] + extra)"
        " for extra in ([], ['-o', 'json'])]\n"
        "heavy = ('click', 'rich', 'kubernetes', 'yaml', 'dataclasses', 'migrate.verify.api')\n"
        "print(codes, sorted(name for name in heavy if name in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "[0, 0] []"
    table, document = done.stdout.split("1 IPs: 1 ok, 0 conflict, 0 silent\n")
    assert "192.0.2.1  ok      02:00:00:00:00:01" in table
    assert json.loads(document)["arp"][0]["status"] == "ok"


def test_python_m_migrate_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "migrate", "--version"], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("migrate, version ")
