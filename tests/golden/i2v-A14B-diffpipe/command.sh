#!/bin/sh
# diffpipe job shore-a14b-dp: run inside the image, from /opt/diffusion-pipe
set -e
cd /opt/diffusion-pipe
# step: train
deepspeed --num_gpus=1 train.py --deepspeed --config /job/diffpipe.toml --master_port 29500
