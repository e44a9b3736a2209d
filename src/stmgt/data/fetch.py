"""Download public benchmark datasets, verified by sha256.

``fetch("los_loop", "data/los_loop")`` downloads every file of :data:`DATASETS` ``["los_loop"]`` into
the folder and returns it. Every URL is pinned to a commit and every file to its sha256 (taken from
the dataset's ``PROVENANCE.md``), so what lands on disk is exactly what the tests and benchmarks
were checked against.

How a file is fetched (standard library only):

* a file already present with the right sha256 is not downloaded again;
* the bytes stream to ``<name>.part``; when a ``.part`` exists from an interrupted download, the
  download resumes with an HTTP ``Range`` request (a server that ignores it and answers 200 makes it
  start over);
* the sha256 is checked before an atomic rename to the final name, so a failed or corrupt download
  never leaves a file that looks complete. A corrupt one deletes the ``.part`` and raises a one-line
  :class:`~stmgt.errors.DataError` naming the file, the expected and the actual hash;
* offline (connection refused, DNS failure, timeout) raises a one-line DataError giving the URLs to
  download by hand and the folder to put them in.

``base_url`` replaces the host part: file ``f`` is then fetched from ``base_url + "/" + f.path``
(used by the tests with a local server, or for a mirror).
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stmgt.errors import DataError
from stmgt.paths import sha256_file

CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it goes, where it comes from, its size and sha256."""

    name: str  # path inside the dataset folder, e.g. "metr_la_graph/adj_mx.pkl"
    host: str  # e.g. "https://raw.githubusercontent.com/lehaifeng/T-GCN/<commit>"
    path: str  # path on the host, e.g. "data/los_speed.csv"
    sha256: str
    size: int | None = None

    @property
    def url(self) -> str:
        return f"{self.host}/{self.path}"

    def url_at(self, base_url: str | None) -> str:
        return self.url if base_url is None else f"{base_url.rstrip('/')}/{self.path}"


@dataclass(frozen=True)
class Dataset:
    """A public dataset: its files, its format for :func:`stmgt.data.loaders.load`, and a note."""

    files: tuple[RemoteFile, ...]
    format: str | None
    description: str
    license: str


_GH = "https://raw.githubusercontent.com"
_TGCN = f"{_GH}/lehaifeng/T-GCN/219a2346f5bf68d54d91a948e7a41a08f9edc46b"
_PYGT = f"{_GH}/benedekrozemberczki/pytorch_geometric_temporal/adefe44265ad8faf239fd6cf3b59b95ca3ee60aa"
_I94 = (
    f"{_GH}/CodyTheCoderPrice/Finding-Heavy-Traffic-Indicators-on-I94/71a5b54c34abb30e8e72fa0032d3898e3996e5f3"
)
_TRANSDIM = f"{_GH}/xinychen/transdim/99a31275f12504f59b0c3d3debd50fea92b2e973"

#: Registry of downloadable datasets (URLs pinned to a commit, sha256 per file).
DATASETS: dict[str, Dataset] = {
    "los_loop": Dataset(
        files=(
            RemoteFile("los_speed.csv", _TGCN, "data/los_speed.csv",
                       "7b732d86ae32b2930595becba28aff39dacbfb2197e250fc0332e1744ce2cbf4", 3402125),
            RemoteFile("los_adj.csv", _TGCN, "data/los_adj.csv",
                       "7a6eb41e10677992b5af50f5ab187c6c05c5c3a92cb973950cfddbf857361e76", 111686),
        ),
        format="tgcn",
        description="Los-loop: 207 LA freeway sensors x 2016 5-min steps (speed, mph), T-GCN (Zhao 2020)",
        license="no explicit data license; research use, cite T-GCN and DCRNN",
    ),
    "metr_la_graph": Dataset(
        files=(
            RemoteFile("metr_la_graph/adj_mx.pkl", _TGCN, "STGC-GNN/data/METR-LA/adj_mx.pkl",
                       "64997ab26db6ffdd2f6d57c8c12da6aedcb3efc2729b46ab4cc48e8c7ad1e5e8", 177422),
            RemoteFile("metr_la_graph/graph_sensor_ids.txt", _TGCN,
                       "STGC-GNN/data/METR-LA/graph_sensor_ids.txt",
                       "3ba026caa2e6263ab0ea54b0fa1b125dbfa7216544cd05313b555e826292b990", 1448),
            RemoteFile("metr_la_graph/graph_sensor_locations.csv", _TGCN,
                       "STGC-GNN/data/METR-LA/graph_sensor_locations.csv",
                       "eb8ea96e07358b45d0e4ba3b89c2673fa20c54af50150249e627389e749ade6f", 6341),
        ),
        format=None,
        description="METR-LA sensor graph (DCRNN adj_mx.pkl, ids, lat/lon); fetch into the los_loop folder",
        license="DCRNN repository (MIT); no explicit data license",
    ),
    "montevideo_bus": Dataset(
        files=(
            RemoteFile("montevideo_bus.json", _PYGT, "dataset/montevideo_bus.json",
                       "37d9c6286d474077b5c05173c1570c4da42c387013116daa8862c7a6cab86a75", 3131884),
        ),
        format="montevideo",
        description="Montevideo bus-stop hourly inflow, 675 stops x 744 h (PyTorch Geometric Temporal)",
        license="MIT (pytorch_geometric_temporal); Uruguay open data",
    ),
    "i94": Dataset(
        files=(
            RemoteFile("Metro_Interstate_Traffic_Volume.csv", _I94, "Metro_Interstate_Traffic_Volume.csv",
                       "3ec6b8844c4e5e20904855c81079a30e4342da20b7010e78606a244e539f29f6", 3188251),
        ),
        format="i94",
        description="UCI Metro Interstate Traffic Volume: I-94 hourly volume with weather, 2012-2018",
        license="CC BY 4.0 (UCI)",
    ),
    "birmingham_parking": Dataset(
        files=(
            RemoteFile("tensor.mat", _TRANSDIM, "datasets/Birmingham-data-set/tensor.mat",
                       "ebb2e47871294cb143be3549d1f618062b5327b2da7251b1bdafc145880b5e4a", 60403),
        ),
        format=None,
        description="Birmingham car-park occupancy, 30 parks x 77 days x 18 half-hours (transdim)",
        license="MIT (transdim); UCI data CC BY 4.0",
    ),
    "nyc_taxi_od": Dataset(
        files=(
            RemoteFile("tensor.mat", _TRANSDIM, "datasets/NYC-data-set/tensor.mat",
                       "3514ad3922083176215590c4a59563464833b2d889764199de3913f71fff47be", 1020727),
        ),
        format=None,
        description="NYC taxi OD hourly trip counts, 30 x 30 zones x 1464 h (transdim)",
        license="MIT (transdim); NYC TLC open data",
    ),
}


def _manual_steps(ds_name: str, files: tuple[RemoteFile, ...], directory: Path) -> str:
    urls = " ; ".join(f"{f.url} -> {directory / f.name}" for f in files)
    return f"download by hand and place the files so: {urls} (then run fetch('{ds_name}') again to verify)"


def _open(url: str, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "stmgt-fetch"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) URLs from the registry


def _download(url: str, part: Path, *, timeout: float, progress: bool, label: str, size: int | None) -> None:
    """Stream ``url`` into ``part``, resuming from its current length when the server allows it."""
    start = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the .part is already complete (or longer than the file)
            return
        raise
    with resp:
        status = getattr(resp, "status", 200)
        if start and status != 206:  # Range ignored: the body is the whole file, start over
            start = 0
        total = size
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit():
            total = start + int(length)
        bar = None
        if progress:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=label, leave=False)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                bar = None
        received = 0
        try:
            with open(part, "ab" if start else "wb") as out:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
        if length is not None and length.isdigit() and received < int(length):
            # read(amt) returns short instead of raising when the server hangs up mid-body
            raise http.client.IncompleteRead(b"", int(length) - received)


def fetch(
    name: str,
    directory: str | Path,
    *,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    retries: int = 2,
    datasets: dict[str, Dataset] | None = None,
) -> Path:
    """Download dataset ``name`` of :data:`DATASETS` into ``directory`` and return the folder.

    Args:
        name: a key of :data:`DATASETS` (``"los_loop"``, ``"metr_la_graph"``, ``"i94"``, ...).
        directory: destination folder (created); files keep their registry names inside it.
        base_url: fetch from this host instead of the registry's (mirrors, tests).
        progress: show a tqdm progress bar per file.
        timeout: socket timeout in seconds.
        retries: resume attempts after a connection that drops mid-file.
        datasets: another registry (tests); default :data:`DATASETS`.

    Raises:
        DataError: unknown name, a hash mismatch, or no connection (with the manual steps).
    """
    registry = DATASETS if datasets is None else datasets
    if name not in registry:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(registry)}")
    ds = registry[name]
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    for f in ds.files:
        dest = root / f.name
        if dest.is_file() and sha256_file(dest) == f.sha256:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        url = f.url_at(base_url)
        for attempt in range(retries + 1):
            try:
                _download(url, part, timeout=timeout, progress=progress, label=f.name, size=f.size)
                break
            except urllib.error.HTTPError as e:
                steps = _manual_steps(name, ds.files, root)
                raise DataError(f"{url}: HTTP {e.code} {e.reason}; {steps}") from None
            except urllib.error.URLError as e:  # no connection at all: DNS, refused, unreachable
                raise DataError(
                    f"cannot download {f.name} from {url} ({e.reason}); you seem to be offline;"
                    f" {_manual_steps(name, ds.files, root)}"
                ) from None
            except (http.client.HTTPException, ConnectionError, TimeoutError) as e:  # dropped mid-transfer
                got = part.stat().st_size if part.exists() else 0
                if got > 0 and attempt < retries:
                    continue  # made progress: resume from the .part
                if got == 0:
                    raise DataError(
                        f"cannot download {f.name} from {url} ({type(e).__name__}: {e});"
                        " you seem to be offline;"
                        f" {_manual_steps(name, ds.files, root)}"
                    ) from None
                raise DataError(
                    f"download of {f.name} from {url} was interrupted after {got} bytes ({type(e).__name__});"
                    f" run fetch again to resume from {part.name}"
                ) from None
        got = sha256_file(part) if part.exists() else "nothing"
        if got != f.sha256:
            part.unlink(missing_ok=True)
            raise DataError(
                f"{f.name}: sha256 mismatch (expected {f.sha256}, got {got}); the download was corrupt"
                " or the file changed upstream; run fetch again"
            )
        os.replace(part, dest)
    return root
