"""Real-ESRGAN's networks (RRDBNet, SRVGGNetCompact), the readers of its released ``.pth`` and
ncnn files, and its upscaler: the pretrained peers AdaCode is compared with."""
