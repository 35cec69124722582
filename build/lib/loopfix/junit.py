"""Verdicts as JUnit XML, for CI dashboards (`--junit-xml FILE` on sim, verify and loadtest).

One <testcase> per invariant: classname the scenario or run, name the invariant. A broken
invariant is a <failure> whose message is its first anomaly in one sentence and whose text
holds the rendered verdict with its witness events; "unknown" is an <error> (the checker could
not decide: never a pass); "not observable" (target mode) is <skipped message="not observable:
why">. A dashboard then shows which invariant broke, in which run, and since when.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from loopfix.harness import invariants as inv


def _first_anomaly(v: inv.Verdict) -> str:
    for group in v.anomalies.values():
        if group:
            return inv.render_anomaly(group[0])
    return inv.valid_label(v.valid)


def testsuite(classname: str, verdicts: Sequence[inv.Verdict]) -> ET.Element:
    """One <testsuite> named `classname`, a <testcase> per verdict."""
    suite = ET.Element("testsuite", name=classname)
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=classname, name=v.name, time="0")
        if v.valid is True:
            continue
        if v.valid is False:
            counts["failures"] += 1
            kind = next(iter(v.anomalies), "broken")
            ET.SubElement(case, "failure", message=_first_anomaly(v), type=kind).text = inv.render_verdict(v)
        elif v.valid == inv.NOT_OBSERVABLE:
            counts["skipped"] += 1
            why = v.figure.get("why") or "it needs the service's insides"
            ET.SubElement(case, "skipped", message=f"not observable: {why}")
        else:
            counts["errors"] += 1
            ET.SubElement(case, "error", message=_first_anomaly(v), type="unknown").text = inv.render_verdict(v)
    suite.set("tests", str(len(verdicts)))
    for key, n in counts.items():
        suite.set(key, str(n))
    return suite


def junit_xml(classname: str, verdicts: Sequence[inv.Verdict]) -> bytes:
    """The whole document: <testsuites> holding one suite."""
    root = ET.Element("testsuites", name="loopfix")
    suite = testsuite(classname, verdicts)
    root.append(suite)
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, suite.get(key, "0"))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: Path, classname: str, verdicts: Sequence[inv.Verdict]) -> Path:
    """Write the JUnit XML of `verdicts` to `path` (its folder created); OSError as is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(junit_xml(classname, verdicts))
    return path
