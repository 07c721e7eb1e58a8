"""Installs the recipe packages (``sisyphus`` engine and ``llmasr`` job library) and the ``sis`` command.

torch is pinned: an unpinned torch (also as a dependency of peft/accelerate) resolves to a multi-GB
CUDA build; install the pinned CPU wheel first, as the README's commands do.
"""
from setuptools import find_packages, setup

TORCH = "torch==2.13.0"

setup(
    name="llmasr",
    version="0.1.0",
    description="Speech LLMs vs. LLM shallow fusion for ASR: a Sisyphus experiment setup",
    package_dir={"": "recipe"},
    packages=find_packages(where="recipe"),
    python_requires=">=3.10",
    install_requires=[
        TORCH,
        "numpy",
        "returnn",
        "dm-tree",
        "h5py",
        "i6-models",
        "typeguard",  # needed by i6_models at import
        "transformers>=5.0",
        "peft",
        "accelerate",
        "sentencepiece",
        "jiwer",
        "whisper-normalizer",
        "soundfile",
        "pyarrow",
        "datasets",
        "matplotlib",
        "tqdm",
        "psutil",
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "ipython"],
        # bench/peer_search.py only: ESPnet's reference searches (espnet.nets.*); install without its dependencies
        # (pip install --no-deps espnet), its full dependency set is not needed for espnet.nets
        "bench": ["espnet==202511"],
    },
    entry_points={"console_scripts": ["sis = sisyphus.__main__:main"]},
)
