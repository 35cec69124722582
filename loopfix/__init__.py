"""loopfix: simulation and load-test harness for a Flask + RQ + Redis recording service.

One top-level package. The repository keeps its folders side by side (reference_app/, sim/,
harness/, loadtests/, reports/, benchmarks/, scenarios/); the wheel installs them under this
package (pyproject's package-dir), so code imports them as `loopfix.sim`, `loopfix.harness`, ...
and nothing generic lands in site-packages. In a source checkout (tests, PYTHONPATH=<checkout>)
the same names resolve because the checkout's root joins this package's search path below.
"""

from pathlib import Path as _Path

_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "reference_app" / "__init__.py").is_file():
    __path__.append(str(_root))  # noqa: F821 - a package's __path__: loopfix.sim -> <checkout>/sim
