"""`--device`: one vocabulary and one set of messages for both backends (onnxruntime, torch)."""

from __future__ import annotations

from instag.common.enums import TextEnum
from instag.common.errors import InstagError, UsageError
from instag.common.spelling import said


class Device(TextEnum):
    AUTO = "auto"  # CUDA when it really works here, else CPU
    CUDA = "cuda"  # CUDA or an error: never a silent CPU run
    CPU = "cpu"


    @classmethod
    def parse(cls, text: str | Device) -> Device:
        try:
            return cls(text)
        except ValueError:
            raise UsageError(f"{said('device', text)}: choose auto, cuda or cpu") from None


def cuda_unavailable(backend: str, detail: str) -> InstagError:
    """The one message for `--device cuda` on a machine where `backend` cannot use CUDA."""
    return InstagError(f"--device cuda: {backend} cannot use CUDA here ({detail})",
                       "use --device auto (CUDA when usable, else CPU) or --device cpu")
