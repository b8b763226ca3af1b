"""Media output for MOVA clips: MP4 (H.264 + AAC), WAV, optional loudness normalisation.

Every writer encodes into a hidden temp file beside the target and only then publishes it, never
replacing an existing file unless asked (`overwrite=True`); see `files.write_atomically`.
"""

from .files import unique_path, write_atomically
from .loudness import LoudnessResult, LoudnessTarget, measure_true_peak_db, normalize_loudness
from .mp4 import OFFICIAL_AUDIO_BITRATE, OFFICIAL_CRF, audio_samples_for_frames, frame_rate, sync_problem, write_mp4
from .wav import write_wav

__all__ = [
    "OFFICIAL_AUDIO_BITRATE",
    "OFFICIAL_CRF",
    "LoudnessResult",
    "LoudnessTarget",
    "audio_samples_for_frames",
    "frame_rate",
    "measure_true_peak_db",
    "normalize_loudness",
    "sync_problem",
    "unique_path",
    "write_atomically",
    "write_mp4",
    "write_wav",
]
