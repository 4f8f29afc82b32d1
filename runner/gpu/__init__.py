"""What runner knows about the GPU a job runs on: inventory, environment rules, image variant, memory plan."""
