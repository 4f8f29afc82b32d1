#!/bin/sh
# diffpipe job city-a14b-dp: run inside the image, from /opt/diffusion-pipe
set -e
cd /opt/diffusion-pipe
# step: train-high_noise
deepspeed --num_gpus=1 train.py --deepspeed --config /job/diffpipe_high_noise.toml --master_port 29500
# step: train-low_noise
deepspeed --num_gpus=1 train.py --deepspeed --config /job/diffpipe_low_noise.toml --master_port 29500
