from setuptools import find_packages, setup

setup(
    name="r1jax",
    version="0.1.0",
    description="DeepSeek-V3 architecture and the DeepSeek-R1 training recipe in JAX/Flax",
    packages=find_packages(include=["r1jax*", "pallas_kernels*"]),
    python_requires=">=3.12",
    install_requires=[
        "jax>=0.11.2",
        "flax>=0.12.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "grain>=0.2.18",
        "sentencepiece>=0.2.2",
        "tokenizers>=0.23",  # Hugging Face tokenizer.json
        "jinja2>=3.1",  # checkpoints' chat templates
        "numpy>=2.0",
        "ml-collections>=1.0",  # config files and --config.x flags
        "safetensors>=0.7",  # Hugging Face checkpoints
        "tensorboardX>=2.6",  # TensorBoard events without TensorFlow
        "tqdm>=4.66",  # progress bars
        "matplotlib>=3.9",  # R1-Zero curves
        "pyarrow>=17",  # local Parquet datasets
        "math-verify[antlr4_13_2]>=0.9",  # the math task's answer equivalence
        "datasets>=5.2",  # users' data sets saved with save_to_disk
    ],
    extras_require={
        # transformers + torch are the parity oracle; they build tiny reference models locally.
        "hf": ["transformers>=5.17", "torch>=2.9"],
        "test": ["pytest>=9.0", "pytest-xdist>=3.8", "filelock>=3.12", "transformers>=5.17",
                 "torch>=2.9"],
    },
)
