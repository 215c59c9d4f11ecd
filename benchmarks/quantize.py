"""INT8 vs fp32 in ONNX Runtime, for the baseline and the pruned + recovered model: mAP and batch-1 CPU latency.

mAP50-95 of every variant is measured by Ultralytics' validator on the built-in data (160 px). Latency is the
median of interleaved runs (fp32 and INT8 of both models, and the fp32 baseline in PyTorch) at 1 and 2 threads, at
160 px (the data's size) and 640 px (a typical deployment size). INT8 variants: static (calibrated) with the head
decoding in float (the default), static with everything quantized, and dynamic. Run it alone on the machine.

    .venv/bin/python benchmarks/quantize.py --pruned weights/distill.pt --notes benchmarks/results/quantize_notes.md
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main() -> None:
    import torch

    from yolo_compress.checkpoint import atomic_write_bytes, load_model
    from yolo_compress.data import SHIPPED_BASELINE
    from yolo_compress.dataset import resolve_data
    from yolo_compress.deploy.export import export
    from yolo_compress.deploy.quantize import quantize_onnx
    from yolo_compress.models import gflops
    from yolo_compress.report.measure import measure_latency, measure_onnx_latency
    from yolo_compress.validation import validate

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default=str(SHIPPED_BASELINE))
    ap.add_argument("--pruned", default="weights/distill.pt", help="a pruned + recovered model (pipeline output)")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--notes", default="", help="text or file appended to the results (targets, what was tried)")
    a = ap.parse_args()
    data = resolve_data(None)
    load0 = os.getloadavg()
    rows, files = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in (("baseline", Path(a.baseline)), ("pruned", Path(a.pruned))):
            pt = Path(tmp) / f"{name}.pt"
            pt.write_bytes(src.read_bytes())
            for size in (160, 640):
                folder = Path(tmp) / f"{size}"
                folder.mkdir(exist_ok=True)
                (folder / pt.name).write_bytes(pt.read_bytes())
                onnx = export(folder / pt.name, "onnx", size, simplify=True)
                files[(name, size, "fp32")] = onnx
                files[(name, size, "int8")] = quantize_onnx(onnx, data, size)
                if size == 160:
                    for variant, kw in (("int8, all quantized", {"float_head": False}),
                                        ("int8 dynamic", {"mode": "dynamic"})):
                        staged = folder / f"{name}_{variant.split()[-1]}.onnx"
                        staged.write_bytes(onnx.read_bytes())
                        files[(name, size, variant)] = quantize_onnx(staged, data, size, **kw)
            files[(name, 160, "pytorch")] = pt
        for (name, size, kind), path in files.items():
            if size == 160:
                m = validate(path, data, 160)["mAP50-95"]
                rows.append({"model": name, "variant": kind, "mAP50-95": m,
                             "gflops": gflops(load_model(files[(name, 160, "pytorch")]), 160),
                             "size_mb": path.stat().st_size / 2**20})
        latency = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for size in (160, 640):
                onnx_keys = [k for k in files if k[1] == size and k[2] != "pytorch"]
                times = measure_onnx_latency([files[k] for k in onnx_keys], size, a.rounds, threads=threads)
                latency.update({(k, threads): t for k, t in zip(onnx_keys, times)})
                base = load_model(files[("baseline", 160, "pytorch")])
                latency[(("baseline", size, "pytorch"), threads)] = measure_latency([base], size, a.rounds)[0]
    lines = ["# INT8 quantization (ONNX Runtime) vs fp32", "",
             f"Baseline `{Path(a.baseline).name}`, pruned + recovered `{a.pruned}`; built-in shapes data; mAP50-95 by "
             "Ultralytics' validator at 160 px; batch-1 CPU latency, median of "
             f"{a.rounds} interleaved runs; load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}. "
             "Produced by `benchmarks/quantize.py`.", "",
             "| model | variant | mAP50-95 | GFLOPs@160 | size MB |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['variant']} | {r['mAP50-95']:.3f} | {r['gflops']:.3f} | {r['size_mb']:.2f} |"
              for r in rows]
    lines += ["", "| model | variant | px | threads | ms | speed-up vs its fp32 ONNX | vs baseline fp32 PyTorch |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for (key, threads), ms in sorted(latency.items(), key=lambda kv: (kv[0][0][1], kv[0][1], kv[0][0][0])):
        name, size, kind = key
        fp32 = latency.get(((name, size, "fp32"), threads))
        torch_base = latency[(("baseline", size, "pytorch"), threads)]
        rel = f"{fp32 / ms:.2f}" if fp32 and kind != "pytorch" else "-"
        lines.append(f"| {name} | {kind} | {size} | {threads} | {ms:.2f} | {rel} | {torch_base / ms:.2f} |")
    notes = Path(a.notes).read_text() if a.notes and Path(a.notes).is_file() else a.notes
    text = "\n".join(lines) + "\n" + notes
    atomic_write_bytes(ROOT / "results" / "quantize.md", text.encode())
    print(text)


if __name__ == "__main__":
    main()
