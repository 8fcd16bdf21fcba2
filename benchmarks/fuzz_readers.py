"""Reader fuzz at full size: N damaged inputs per format (byte flips, truncation, extension of one file of a
small valid sample; hypothesis, derandomized), each read like ``m2hmx-map`` reads it. Prints, per format, how
many inputs were refused with one clear line, read partly (frames, then one line) or read whole, and every
violation (another exception, a hang, a malformed frame, a changed frame of a cut-off .sens).

    .venv/bin/python -m benchmarks.fuzz_readers [--examples 1000] [--formats sens,nyu-mat]

The CI test (tests/faults/test_fuzz_readers.py) runs the same property with 150 inputs per format.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings


def main(argv=None) -> int:
    from tests.faults.fuzz import FORMATS, build, check_prefix, damage, read_damaged
    from tests.faults.test_fuzz_readers import DAMAGE

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--formats", default=",".join(FORMATS))
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    rows = []
    for name in args.formats.split(","):
        root = Path(tempfile.mkdtemp(prefix=f"fuzz_{name}_"))
        sample = build(name, root)
        data = sample.target.read_bytes()
        counts, violations = collections.Counter(), collections.Counter()
        t0 = time.perf_counter()

        @settings(max_examples=args.examples, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(DAMAGE)
        def fuzz(change):
            flips, cut, extra = change
            try:
                outcome, frames = read_damaged(sample, root, damage(data, flips, cut, extra))
                if name == "sens" and not flips and not extra:
                    check_prefix(sample, frames)
                counts[outcome] += 1
            except AssertionError as exc:  # counted, not raised: the table shows every kind of violation
                violations[str(exc).splitlines()[0][:100]] += 1

        fuzz()
        rows.append((name, sum(counts.values()) + sum(violations.values()), counts, violations,
                     time.perf_counter() - t0))
        print(f"  {name}: {rows[-1][1]} inputs", file=sys.stderr, flush=True)
    print(f"\nreader fuzz, {args.examples} hypothesis examples per format (derandomized), load average {load:.1f} "
          "at the start")
    print(f"{'format':<24}{'inputs':>7}{'refused':>9}{'partial':>9}{'whole':>7}{'violations':>11}{'s':>7}")
    for name, n, c, v, s in rows:
        print(f"{name:<24}{n:7d}{c['refused']:9d}{c['partial']:9d}{c['ok']:7d}{sum(v.values()):11d}{s:7.0f}")
        for text, count in v.items():
            print(f"    {count} x {text}")
    return 1 if any(r[3] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
