"""KServe model servers and the Open Inference Protocol client."""
