from setuptools import find_packages, setup

# ONNX export and the LiteRT interpreter (the TFLite runtime outside TensorFlow).
EXPORT = ["tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20", "ai-edge-litert>=2.0"]
# `data prepare`: NYUv2's .mat files and CityScapes' official label table.
PREPARE = ["h5py>=3.8", "scipy>=1.10", "cityscapesscripts>=2.2"]

setup(
    name="keras_sdmtcnn",
    version="0.2.0",
    description="SD-MTCNN: self-distilled multi-task CNNs (Teacher and Student) in Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_sdmtcnn", "keras_sdmtcnn.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorboard>=2.19",
        "keras>=3.10,<4",
        "numpy>=1.26",
        "pyyaml>=6",
        "scikit-image>=0.22",
        "pillow>=10",
        "matplotlib>=3.7",
    ],
    extras_require={
        # TensorFlow's CUDA build (the GPU wheels of the same version); see docs/scaling.md.
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        "export": EXPORT,
        "prepare": PREPARE,
        # filelock: the test processes share one trained run (tests/conftest.py).
        # jax: the networks are checked under a second Keras backend (tests/models).
        "test": ["pytest>=8", "pytest-xdist>=3", "filelock>=3.12", "import-linter>=2.1",
                 "hypothesis>=6", "jax>=0.4.30", *EXPORT, *PREPARE],
    },
    entry_points={"console_scripts": ["sdmtcnn = keras_sdmtcnn.cli:main"]},
)
