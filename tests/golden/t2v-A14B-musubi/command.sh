#!/bin/sh
# musubi job city-a14b: run inside the image, from /opt/musubi-tuner
set -e
cd /opt/musubi-tuner
# step: cache-latents
HF_HUB_OFFLINE=1 python src/musubi_tuner/wan_cache_latents.py --dataset_config /job/musubi_dataset.toml --vae /models/Wan2.2-T2V-A14B/Wan2.1_VAE.pth
# step: cache-text-encoder
HF_HUB_OFFLINE=1 python src/musubi_tuner/wan_cache_text_encoder_outputs.py --dataset_config /job/musubi_dataset.toml --t5 /models/Wan2.2-T2V-A14B/models_t5_umt5-xxl-enc-bf16.pth --batch_size 16
# step: train
accelerate launch --config_file /job/accelerate.yaml --num_cpu_threads_per_process 1 src/musubi_tuner/wan_train_network.py --task t2v-A14B --dit /models/Wan_2.2_ComfyUI_Repackaged/split_files/diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors --dataset_config /job/musubi_dataset.toml --sdpa --mixed_precision fp16 --fp8_base --fp8_scaled --gradient_checkpointing --optimizer_type adamw8bit --learning_rate 0.0002 --max_data_loader_n_workers 2 --persistent_data_loader_workers --network_module networks.lora_wan --network_dim 32 --network_alpha 32 --timestep_sampling shift --discrete_flow_shift 3.0 --dit_high_noise /models/Wan_2.2_ComfyUI_Repackaged/split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors --timestep_boundary 875 --offload_inactive_dit --max_train_epochs 16 --save_every_n_epochs 1 --save_state --save_precision bf16 --log_with tensorboard --logging_dir /outputs/city-a14b/logs --seed 42 --output_dir /outputs/city-a14b --output_name city-a14b
