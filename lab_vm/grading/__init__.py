"""Grading labs: the checker API, the runner, handouts, batch grading and the build sandbox.

A lab folder (``labs/<NN-name>/``) holds ``lab.toml``, ``README.md``, ``solution/``
(with numbered TODO markers), the generated ``skeleton/`` and ``tests/`` (the
checker). The pieces, one job each:

- :mod:`.lab`       reading ``lab.toml``: which files a student writes, the lab's own build files
- :mod:`.checker`   the authoring API: ``@test(points, title)``, regex matching with context
- :mod:`.results`   per-test results, verdicts, the printed report ending in ``Score: X/Y``
- :mod:`.sandbox`   bubblewrap: a compile that cannot write outside its folder or reach the net
- :mod:`.runner`    build a working copy in the sandbox, run the tests in a fresh VM, a verdict
- :mod:`.archive`   taking a submission (folder, .tar.gz, .zip) apart safely
- :mod:`.batch`     a folder of submissions → grades.csv, grades.json, feedback files
- :mod:`.store`     rows written as each submission finishes; a rerun grades what changed
- :mod:`.dask_pool` the same on Dask workers (one task and one VM per submission)
- :mod:`.reaper`    ends what a killed worker process left running
- :mod:`.sheets`    the Canvas/Moodle grade sheet and per-student feedback zips
- :mod:`.private`   an instructor's private tests, from a folder outside the repository
- :mod:`.gradescope` the Gradescope autograder zip and its results.json
- :mod:`.memory`    peak memory of a grading process tree and of its VMs
- :mod:`.handout`   TODO markers → skeleton; handout folders and tarballs
"""
from .checker import Session, TestFailure, TestSpec, assert_lines_match, expect, fail, test
from .results import Report, TestResult

__all__ = ["Report", "Session", "TestFailure", "TestResult", "TestSpec", "assert_lines_match",
           "expect", "fail", "test"]
