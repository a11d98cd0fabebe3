"""Semantic segmentation as a transfer task (issue 32): Semantic-FPN / DeepLabV3+ on the
pretrained ResNet, trained by the same Trainer, evaluated by mIoU at the original image size.

    settings    the `segmentation` config section and its checks (imports nothing of the package)
    model       the model (one flat Keras model over the classifier's layers; keras-cv's
                FeaturePyramid / SpatialPyramidPooling) and the logits -> class map step
    objective   the Trainer objective: per-pixel softmax cross-entropy, ignore label 255,
                normalised by the GLOBAL count of valid pixels
    evaluation  the confusion-matrix accumulator (mIoU, pixel accuracy, per-class IoU) and
                `evaluate_run` (pipelines/evaluate.py)
    export      the SavedModel for TF Serving (image bytes in, class map at original size out)
    predict     the client side: class maps of image files, colour overlays as PNG
The input side is `data/segmentation.py` (the parser), which knows no model. Instance
segmentation (Mask R-CNN) can reuse its instance-mask decoding and the original-size evaluation.
"""
