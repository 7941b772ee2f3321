"""FSLM (Liang 2024): stacks of small LMs that hand natural language to each other, as one ``LM``.

``Stack`` / ``Stage`` (``stack.py``); saved stacks: ``save_stack_spec`` / ``load_stack``; the
command ``londi-jax fslm show`` prints a stack's hand-offs for an input. Layer: above ``lm``
(a stack is made of models), below ``evaluation`` and ``agents`` (which use stacks like models).
The names load on first use, so the command line's parser does not import numpy for them.
"""

__all__ = ["Stack", "StackError", "Stage", "check_stages", "default_parser", "load_stack", "looks_like_stack_file",
           "read_stack_file", "save_stack_spec"]


def __getattr__(name: str):
    if name in __all__:
        from londi_jax.fslm import stack

        return getattr(stack, name)
    raise AttributeError(f"module 'londi_jax.fslm' has no attribute {name!r}")
