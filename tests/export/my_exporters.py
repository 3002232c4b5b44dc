"""A user's own exporter, outside the package: a gzip-compressed float32 TFLite file (what
an app downloads). CONTRIBUTING.md copies this file; tests/export/test_artifacts.py runs
it through `tfimgopt run --plugin` and `tfimgopt verify --plugin`."""

import gzip
import os

from tfimgopt.export import Artifact, Exporter, TFLiteRunner, export_tflite, register_exporter


class GzipTFLiteArtifact(Artifact):
    tolerance = 1e-4  # the float32 TFLite graph: logits as close as float32's

    def runner(self, num_threads=1):
        with gzip.open(self.path, "rb") as f:
            return TFLiteRunner(f.read(), num_threads)  # predict(images) and invoke(image)


class GzipTFLiteExporter(Exporter):
    name = "tflite_gz"
    summary = "float32 TFLite, gzip-compressed"
    suffix = ".tflite.gz"

    def export(self, model, path, **options):
        blob = gzip.compress(export_tflite(model, "float32", metadata=options.get("metadata")), mtime=0)
        with open(f"{path}.part", "wb") as f:  # write beside, then rename: never a torn file
            f.write(blob)
        os.replace(f"{path}.part", path)
        return GzipTFLiteArtifact(path, self.name)

    def open(self, path):
        return GzipTFLiteArtifact(path, self.name)


register_exporter(GzipTFLiteExporter())
