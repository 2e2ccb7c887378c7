"""Tag images with dghs-imgutils' WD14 tagger, its model files taken from an export folder.

Run by the client test in its own environment (dghs-imgutils pins numpy<2), as:
    python imgutils_wd14.py EXPORT GENERAL_THRESHOLD CHARACTER_THRESHOLD PIXELS.npz IMAGE...
Prints one JSON object per image: rating, general and character scores, the embedding size;
saves the model input imgutils prepared for each image (BGR, float32) to PIXELS.npz.
Only the download function is replaced: model, labels, preprocessing and post-processing
are imgutils' own.
"""

import json
import sys
from pathlib import Path

import numpy as np
from imgutils.tagging import wd14


def main() -> None:
    export, general, character, pixels, *images = sys.argv[1:]
    files = {"model.onnx": Path(export) / "model.onnx", "selected_tags.csv": Path(export) / "selected_tags.csv"}

    def local_download(repo_id, filename, **_):  # stands in for hf_hub_download
        return str(files[Path(filename).name])

    wd14.hf_hub_download = local_download
    wd14.MODEL_NAMES["animetag"] = "local/animetag"
    size = wd14._get_wd14_model("animetag").get_inputs()[0].shape[1]
    np.savez(pixels, *[wd14._prepare_image_for_tagging(image, size)[0] for image in images])
    for image in images:
        rating, gen, chars, emb = wd14.get_wd14_tags(
            image, model_name="animetag", general_threshold=float(general), character_threshold=float(character),
            fmt=("rating", "general", "character", "embedding"))
        print(json.dumps({"image": image, "rating": rating, "general": gen, "character": chars,
                          "embedding": [len(emb)]}))


if __name__ == "__main__":
    main()
