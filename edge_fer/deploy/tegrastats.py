"""Parse `tegrastats` lines into loads, power and temperatures (for jetson/benchmark.sh).

tegrastats prints one line per interval; its fields differ between boards and L4T releases:

    RAM 2450/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729,off,...]
    EMC_FREQ 1%@2133 GR3D_FREQ 14%@[407,407] NVDLA0_FREQ @1600 NVDLA1_FREQ off VIC_FREQ 115
    cpu@45.5C gpu@42.2C tj@46C VDD_IN 4723mW/4723mW VDD_CPU_GPU_CV 479mW/479mW ...     (JP 5/6)
    ... GR3D_FREQ 0%@76 ... POM_5V_IN 2545/2547 POM_5V_GPU 0/0 POM_5V_CPU 549/529     (Nano, JP 4)

- loads: CPU per core (off cores skipped), EMC (memory controller) and GR3D (GPU) as percent;
- DLA: tegrastats gives only the DLA clock (`NVDLAn_FREQ @MHz`, or `off`), no utilisation: we
  report the share of samples in which each DLA was clocked, and its highest clock;
- power rails: `NAME cur/avg` in mW (with `mW` units from JetPack 5 on); the board's input power
  is VDD_IN (Orin Nano/NX, Xavier NX), POM_5V_IN (Nano, TX2), else the sum of the rails
  (AGX Orin, AGX Xavier);
- temperatures: `name@xx.xC`.

    python3 -m edge_fer.deploy.tegrastats summarize tegrastats.log --bench bench.json \
        --mode "15W" -o mode_15W.json
    python3 -m edge_fer.deploy.tegrastats merge -o results.json mode_*.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Sequence
from typing import Any

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?")
_DLA = re.compile(r"\bNVDLA(\d)_FREQ (off|(?:(\d+)%)?@\[?(\d+)\]?)")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL_MW = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW")
_RAIL_OLD = re.compile(r"\b((?:VDD|POM|VIN)_[A-Z0-9_]+|GPU|CPU|SOC|CV|VDDRQ|SYS5V) (\d+)/(\d+)\b")
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
# AGX Orin has no input rail; its 1.8 V DRAM rail is already inside the others, so the module
# power is the sum of the rest
NOT_SUMMED = ("VDDQ_VDD2_1V8AO",)


def parse_line(line: str) -> dict[str, Any] | None:
    """One tegrastats line -> its numbers; None for a line that is not tegrastats output."""
    ram = _RAM.search(line)
    cpu = _CPU.search(line)
    if not ram and not cpu:
        return None
    out: dict[str, Any] = {}
    if ram:
        out["ram_used_mb"], out["ram_total_mb"] = int(ram.group(1)), int(ram.group(2))
    if cpu:
        loads = [int(m.group(1)) for m in re.finditer(r"(\d+)%", cpu.group(1))]
        out["cpu_load"] = loads
    m = _EMC.search(line)
    if m:
        out["emc_load"] = int(m.group(1))
    m = _GPU.search(line)
    if m:
        out["gpu_load"] = int(m.group(1))
        if m.group(2):
            out["gpu_mhz"] = int(m.group(2))
    dla: dict[str, Any] = {}
    for m in _DLA.finditer(line):
        on = m.group(2) != "off"
        dla[m.group(1)] = {
            "on": on,
            "load": int(m.group(3)) if m.group(3) else None,
            "mhz": int(m.group(4)) if on and m.group(4) else None,
        }
    if dla:
        out["dla"] = dla
    temps = {m.group(1).lower(): float(m.group(2)) for m in _TEMP.finditer(line)}
    if temps:
        out["temp_c"] = temps
    rails = {m.group(1): int(m.group(2)) for m in _RAIL_MW.finditer(line)}
    if not rails:
        rails = {
            m.group(1): int(m.group(2))
            for m in _RAIL_OLD.finditer(line[cpu.end() :] if cpu else line)
        }
    if rails:
        out["rails_mw"] = rails
        rail = next((r for r in INPUT_RAILS if r in rails), None)
        summed = sum(v for k, v in rails.items() if k not in NOT_SUMMED)
        out["power_mw"] = rails[rail] if rail else summed
        out["power_rail"] = rail or "sum of rails"
    return out


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 2), "max": round(max(values), 2)}


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and maxima over the samples of one run."""
    cpu = [statistics.fmean(s["cpu_load"]) for s in samples if s.get("cpu_load")]
    dla: dict[str, Any] = {}
    for s in samples:
        for core, d in s.get("dla", {}).items():
            e = dla.setdefault(core, {"on": 0, "n": 0, "mhz_max": None, "loads": []})
            e["n"] += 1
            e["on"] += int(d["on"])
            if d["mhz"] is not None:
                e["mhz_max"] = max(e["mhz_max"] or 0, d["mhz"])
            if d["load"] is not None:
                e["loads"].append(d["load"])
    rails: dict[str, list[int]] = {}
    temps: dict[str, list[float]] = {}
    for s in samples:
        for k, v in s.get("rails_mw", {}).items():
            rails.setdefault(k, []).append(v)
        for k, t in s.get("temp_c", {}).items():
            temps.setdefault(k, []).append(t)
    power = [s["power_mw"] for s in samples if "power_mw" in s]
    return {
        "samples": len(samples),
        "cpu_load_pct": _stats(cpu),
        "gpu_load_pct": _stats([s["gpu_load"] for s in samples if "gpu_load" in s]),
        "emc_load_pct": _stats([s["emc_load"] for s in samples if "emc_load" in s]),
        "dla": {
            core: {
                "active_share": round(e["on"] / e["n"], 3),
                "mhz_max": e["mhz_max"],
                "load_pct": _stats(e["loads"]),
            }
            for core, e in sorted(dla.items())
        },
        "power_mw": _stats(power),
        "power_rail": next((s["power_rail"] for s in samples if "power_rail" in s), None),
        "rails_mw": {k: _stats(v) for k, v in sorted(rails.items())},
        "temp_c_max": {k: max(v) for k, v in sorted(temps.items())},
        "ram_used_mb_max": max(
            (s["ram_used_mb"] for s in samples if "ram_used_mb" in s), default=None
        ),
    }


def parse_log(text: str) -> list[dict[str, Any]]:
    return [s for s in (parse_line(ln) for ln in text.splitlines()) if s is not None]


def bench_numbers(report: dict[str, Any]) -> list[dict[str, Any]]:
    """fps and latency p50/p99 per backend from an `edge-fer bench` JSON report."""
    results = list(report.get("results") or [])
    for clip in report.get("clips") or []:
        results += clip.get("results") or []
    rows = []
    for r in results:
        if not r.get("available", True):
            continue
        lat = r.get("latency_ms") or r.get("saturated_latency_ms") or {}
        rows.append(
            {
                "backend": r.get("backend"),
                "frames": r.get("frames"),
                "fps": r.get("fps"),
                "latency_p50_ms": lat.get("p50"),
                "latency_p99_ms": lat.get("p99"),
            }
        )
    return rows


def _main(argv: list[str] | None = None) -> int:
    from edge_fer.fileio import write_json

    ap = argparse.ArgumentParser(prog="python3 -m edge_fer.deploy.tegrastats")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summarize", help="one run: tegrastats log (+ bench JSON) -> JSON")
    s.add_argument("log")
    s.add_argument("--bench", help="the `edge-fer bench --json` report of the same run")
    s.add_argument("--mode", default=None, help="nvpmodel mode name of the run")
    s.add_argument("--mode-id", type=int, default=None)
    s.add_argument("-o", "--out", required=True)
    m = sub.add_parser("merge", help="several summaries -> one JSON document")
    m.add_argument("parts", nargs="+")
    m.add_argument("-o", "--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "summarize":
        with open(args.log, encoding="utf-8", errors="replace") as fh:
            samples = parse_log(fh.read())
        doc: dict[str, Any] = {"nvpmodel": {"id": args.mode_id, "name": args.mode}}
        if args.bench:
            with open(args.bench, encoding="utf-8") as fh:
                doc["bench"] = bench_numbers(json.load(fh))
        doc["tegrastats"] = summarize(samples)
        if not samples:
            print(f"{args.log}: no tegrastats lines", file=sys.stderr)
        write_json(args.out, doc)
        return 0 if samples else 1
    parts = []
    for p in args.parts:
        with open(p, encoding="utf-8") as fh:
            parts.append(json.load(fh))
    write_json(args.out, {"modes": parts})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_main())
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
        # a log or bench report that is missing or not one: one line, as edge-fer's own errors
        print(f"tegrastats: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
