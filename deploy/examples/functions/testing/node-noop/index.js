// entryPoint: index.handler, runtime: nodejs20.x (CommonJS) — returns {ok: true, runtime: "node"}.
exports.handler = async (event, context) => {
  return { ok: true, runtime: 'node' };
};
