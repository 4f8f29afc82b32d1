#!/bin/sh
# musubi job beach-mixed: run inside the image, from /opt/musubi-tuner
set -e
cd /opt/musubi-tuner
# step: cache-latents
HF_HUB_OFFLINE=1 python src/musubi_tuner/wan_cache_latents.py --dataset_config /job/musubi_dataset.toml --vae /models/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth
# step: cache-text-encoder
HF_HUB_OFFLINE=1 python src/musubi_tuner/wan_cache_text_encoder_outputs.py --dataset_config /job/musubi_dataset.toml --t5 /models/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth --batch_size 16
# step: train
accelerate launch --config_file /job/accelerate.yaml --num_cpu_threads_per_process 1 src/musubi_tuner/wan_train_network.py --task t2v-1.3B --dit /models/Wan_2.1_ComfyUI_repackaged/split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors --dataset_config /job/musubi_dataset.toml --sdpa --mixed_precision bf16 --gradient_checkpointing --optimizer_type adamw8bit --learning_rate 0.0002 --max_data_loader_n_workers 2 --persistent_data_loader_workers --network_module networks.lora_wan --network_dim 16 --network_alpha 16 --timestep_sampling shift --discrete_flow_shift 3.0 --max_train_epochs 16 --save_every_n_epochs 1 --save_state --save_precision bf16 --log_with tensorboard --logging_dir /outputs/beach-mixed/logs --seed 42 --output_dir /outputs/beach-mixed --output_name beach-mixed
