"""`edge-fer experiment`: named research studies that train variants, evaluate them on one
held-out split and write a Markdown report with tables and plots.

- data.py: the study's faces, split (FER2013 Training / PrivateTest, or held-out clips of a
  folder dataset), budget subsampling, colour check, and the folders of links the trainer reads
- runs.py: one variant = one resumable run folder trained by edge_fer.train.trainer.train;
  Budget and Options, what a study is asked to run (the CLI reads their defaults)
- colour.py: the 3-channel colour variant (the trainer reads grayscale only)
- measure.py: evaluation of a run (torch) and of ONNX models (accuracy, size, latency)
- plots.py, report.py: matplotlib figures (Agg) and the Markdown report
- studies.py: the studies themselves
"""

STUDIES = ("architectures", "preprocessing", "grouping", "channels", "compression")


def heading(study: str) -> str:
    """The first line of a study's report (a rerun in the same --out checks it)."""
    return "# Study: " + {"grouping": "label grouping", "channels": "input channels"}.get(
        study, study
    )
