"""Object detection as a transfer task: RetinaNet on the pretrained ResNet (issue 18).

    retinanet   the model, label assignment, losses and NMS decoding (the only keras-cv importer)
    objective   the Trainer objective (`training.objectives`): per-replica focal + box loss
    evaluation  COCOeval (pycocotools) on the eval shards, boxes/ids mapped back to the originals
    export      the detection SavedModel for TF Serving (image bytes in, pixel boxes out)
    predict     the client side: detections of image files, drawn onto a PNG
The input side is `data/detection.py` (the parser), which knows no model.

Library choice (spiked on this machine, TF 2.21 / Keras 3.15): keras-cv 0.9 rather than keras-hub.
Its RetinaNet pieces are plain Keras layers and functions over dense tensors (a dict of C3-C5
feature maps in, P3-P7 out; targets from dense padded boxes), so the detector stays one flat
functional model whose backbone layers keep the classifier's names: the strict backbone restore,
stage freezing and frozen-BN behaviour apply unchanged. keras-hub's `RetinaNetBackbone` wants a
keras-hub `FeaturePyramidBackbone` as its image encoder and nests it as a sub-model (our stages would
sit one level down, out of reach of `layers_by_stage`), and adds tensorflow-text to the install;
keras-cv is already a dependency. keras-cv is frozen (no new releases), which here means stable;
the cost is one private function (box decoding), pinned in `retinanet.py`.
"""
