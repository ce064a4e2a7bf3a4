#version 330 core
// UV bake: rasterise the mesh in UV space; each texel samples the frame where its surface point
// projects. Output is premultiplied by the texel's weight: (rgb * w, w), w = 0 when the point faces
// away (normal . view <= u_min_facing), is hidden (depth test against the camera-view depth map) or
// falls outside the frame. Summed with additive blending this is the accumulator's running average;
// with gain k and blending (ONE, ONE_MINUS_SRC_ALPHA) it is an exponential moving average whose
// per-frame step is k * w (old views fade, frontal views fade them fastest).

#if defined VERTEX_SHADER

in vec3 in_position;  // image pixels
in vec3 in_normal;    // image space
in vec2 in_uv;        // [0, 1], v = 0 is texture row 0

out vec3 v_pos;
out vec3 v_normal;

void main() {
    v_pos = in_position;
    v_normal = in_normal;
    gl_Position = vec4(in_uv * 2.0 - 1.0, 0.0, 1.0);
}

#elif defined FRAGMENT_SHADER

uniform sampler2D u_frame;   // the image, row 0 = top
uniform sampler2D u_depth;   // camera-view depth map, row 0 = top, nearest filtering
uniform vec2 u_frame_size;
uniform vec2 u_depth_range;  // as in depth.glsl
uniform float u_depth_bias;  // normalised depth units
uniform float u_min_facing;
uniform float u_weight_power;
uniform float u_gain;        // 1: plain sum (blend ONE, ONE); k < 1: moving average (ONE, ONE_MINUS_SRC_ALPHA)

in vec3 v_pos;
in vec3 v_normal;

out vec4 f_out;

void main() {
    vec2 st = (v_pos.xy + 0.5) / u_frame_size;
    float facing = -normalize(v_normal).z;  // the camera looks down +z
    float depth = (v_pos.z - u_depth_range.x) * u_depth_range.y;
    bool inside = all(greaterThanEqual(st, vec2(0.0))) && all(lessThanEqual(st, vec2(1.0)));
    // slope-scaled bias: the nearest depth-map sample may be up to ~1 px off, which on an oblique
    // surface is tan(angle) px of depth
    float slope = sqrt(max(1.0 - facing * facing, 0.0)) / max(facing, 1e-3);
    float bias = u_depth_bias + 1.5 * slope * u_depth_range.y;
    bool visible = inside && facing > u_min_facing && depth <= texture(u_depth, st).r + bias;
    float w = visible ? pow(facing, u_weight_power) : 0.0;
    f_out = vec4(texture(u_frame, st).rgb * w, w) * u_gain;
}

#endif
