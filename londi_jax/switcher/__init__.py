"""The LONDI switcher: pure-functional, jitted Q-learning over the binary switch g in {0, 1}.

Modules (lower to higher):

* ``config``   static ``SwitcherConfig`` vs traced ``HParams`` (+ epsilon schedule)
* ``network``  NNX Q-network, ``graphdef(config)``, ``init_params``, ``q_values``
* ``budget``   LONDI-B: remaining budget, admissibility mask, masked max / argmax, b/n feature
* ``core``     ``Transition``, ``act`` (epsilon-greedy over admissible switches), optimizer
* ``replay``   pytree ring buffer ``init`` / ``add`` / ``sample``
* ``dqn``      Double DQN with target network (hard / Polyak)
* ``pqn``      buffer-free Peng Q(lambda), PQN style
* ``toy``      pure-JAX chain benchmark; ``exact`` value iteration on (state, budget)
* ``train``    ``make_train(config, env, env_params)``: ``train`` / ``init_train_state`` /
  ``train_chunk`` / ``evaluate``
* ``sweep``    ``SweepSpec`` -> one vmapped program -> ``ResultsTable``
* ``toy_bench`` toy runs and sweeps compared with the exact optimum (``londi-jax toy``)
"""
