"""Tagging and scoring with a trained run; nothing here imports the trainer (DESIGN §2)."""

from mmner.inference.run import (
    check_visual,
    data_sha1,
    dataset_record,
    default_device,
    device_name,
    evaluate,
    extras_summary,
    load_run,
    predict_marginals,
    predict_tags,
    quantize_int8,
    read_run_config,
    score_posts,
    visual_inputs,
)

__all__ = ["check_visual", "data_sha1", "dataset_record", "default_device", "device_name", "evaluate", "extras_summary", "load_run",
           "predict_marginals", "predict_tags", "quantize_int8", "read_run_config", "score_posts", "visual_inputs"]
