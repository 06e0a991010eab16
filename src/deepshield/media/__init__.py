"""Media files to model inputs: video decoding (PyAV), photos, face detection and crops, scores.

Frames are uint8 [H,W,3] RGB numpy arrays (rotation applied); crops become float32
[N,3,S,S] in [0, 1] through `crops_to_tensor`.
"""

from deepshield.media.aggregate import VideoScore, frame_score, video_score
from deepshield.media.extract import (
    CropOptions,
    FileFaces,
    FrameFaces,
    faces_or_larger,
    file_faces,
    frame_faces,
    image_faces,
    interlace_note,
    join_parts,
    median_face_width,
    photo_faces,
    video_faces,
)
from deepshield.media.faces import (
    Face,
    aligned_crop,
    box_iou,
    crop_box,
    crop_face,
    crops_to_tensor,
    detect_faces,
    detect_faces_near,
    face_crops,
    landmark_model_path,
)
from deepshield.media.images import image_size, read_media_image
from deepshield.media.video import (
    VIDEO_EXTENSIONS,
    MediaLimitError,
    MediaLimits,
    VideoFrames,
    VideoInfo,
    iter_video_frames,
    probe_video,
    read_video_frames,
    sample_frames,
    sample_indices,
)

__all__ = [
    "VIDEO_EXTENSIONS",
    "CropOptions",
    "Face",
    "FileFaces",
    "FrameFaces",
    "MediaLimitError",
    "MediaLimits",
    "VideoFrames",
    "VideoInfo",
    "VideoScore",
    "aligned_crop",
    "box_iou",
    "crop_box",
    "crop_face",
    "crops_to_tensor",
    "detect_faces",
    "detect_faces_near",
    "face_crops",
    "faces_or_larger",
    "file_faces",
    "frame_faces",
    "frame_score",
    "image_faces",
    "image_size",
    "interlace_note",
    "iter_video_frames",
    "join_parts",
    "landmark_model_path",
    "median_face_width",
    "photo_faces",
    "probe_video",
    "read_media_image",
    "read_video_frames",
    "sample_frames",
    "sample_indices",
    "video_faces",
    "video_score",
]
