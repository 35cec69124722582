"""The model's actors: generator processes that drive the app's flows (reference_app/flows/) and
the environment through simulated time — the web requests (`web`), the RQ workers with their
scheduler and sweeper (`workers`), callers and browser players (`clients`) and bulk-deleters
(`deleters`). Each is a mixin of the engine's Model: they share one World."""
