"""The integer codes compiled kernels branch on: activations, losses and optimizers.

Append-only: never renumber or reuse a code. Numba's on-disk cache freezes these numbers into the
machine code of every kernel that reads them, and does not recompile when only this file changes.
Names map to codes once, here; nothing else in the package spells a code out.
"""

# Activations. Hidden layers use identity, logistic, tanh, relu and the four after exp; output
# layers use identity, logistic, softmax or exp.
IDENTITY, LOGISTIC, TANH, RELU, SOFTMAX, EXP = 0, 1, 2, 3, 4, 5
LEAKY_RELU, ELU, GELU, SILU = 6, 7, 8, 9
ACTIVATION_CODES = {"identity": IDENTITY, "logistic": LOGISTIC, "tanh": TANH, "relu": RELU,
                    "softmax": SOFTMAX, "exp": EXP, "leaky_relu": LEAKY_RELU, "elu": ELU,
                    "gelu": GELU, "silu": SILU}
LEAKY_SLOPE = 0.01  # leaky_relu's slope for z < 0
# GELU's and SiLU's derivatives need the pre-activation z, not only the output f(z): the forward
# pass keeps z for them.
NEEDS_PRE_ACTIVATION = (GELU, SILU)

# Losses. Each is paired with the output activation that makes it "canonical", so that the
# derivative of the loss with respect to the output pre-activation is just (p - y).
SQUARED_ERROR, LOG_LOSS, BINARY_LOG_LOSS, POISSON = 0, 1, 2, 3
LOSS_CODES = {"squared_error": SQUARED_ERROR, "log_loss": LOG_LOSS,
              "binary_log_loss": BINARY_LOG_LOSS, "poisson": POISSON}

# Mini-batch optimizers (L-BFGS runs in scipy, on the host).
SGD, ADAM, ADAGRAD, RMSPROP, ADAMW = 0, 1, 2, 3, 4
OPTIMIZER_CODES = {"sgd": SGD, "adam": ADAM, "adagrad": ADAGRAD, "rmsprop": RMSPROP,
                   "adamw": ADAMW}
